"""An OpenAI-compatible chat-completions server whose replies stream slowly, for shutdown tests.

A user message ``slow N SECONDS`` is answered with N words, one chunk every SECONDS; anything else
with ``ok`` at once. Start it with ``with SlowModel() as model:`` and point ``engine.openai.base_url``
at ``model.base_url``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_SLOW = re.compile(r"^slow (\d+) ([\d.]+)$")


class SlowModel:
    def __init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def engine_config(self) -> dict[str, Any]:
        return {"model": "openai", "openai": {"base_url": self.base_url, "model": "slow",
                                              "api_key_env": "ISOTOPE_TEST_NO_KEY", "max_retries": 0}}

    def __enter__(self) -> SlowModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = str(body["messages"][-1].get("content") or "")
        match = _SLOW.match(text)
        words, delay = (int(match[1]), float(match[2])) if match else (1, 0.0)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self._chunk(body["model"], {"role": "assistant", "content": ""}, None)
            for i in range(words):
                self._chunk(body["model"], {"content": f"w{i} " if match else "ok"}, None)
                time.sleep(delay)
            self._chunk(body["model"], {}, "stop")
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the engine abandoned the turn and hung up

    def _chunk(self, model: str, delta: dict[str, Any], finish: str | None) -> None:
        chunk = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 0, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.flush()

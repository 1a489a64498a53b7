"""A small OpenAI-compatible chat-completions server for tests: real HTTP, streaming and tool calls.

Its "model" is a script on the conversation, so tests can predict every reply:

* the last message is a tool result      -> text "Tool said: <content>"
* the last user text starts ``add task:`` -> a tool call ``add_task(title=...)``
* the last user text is ``explode``       -> HTTP 500
* anything else                           -> text "Echo <n>: <text>" (n = user messages so far)

Every request body and its headers are kept in :attr:`FakeOpenAI.requests`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    """Start with ``with FakeOpenAI() as server:``; ``server.base_url`` ends in ``/v1``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def reply_for(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The scripted assistant message (``content`` and/or ``tool_calls``) for this conversation."""
    last = messages[-1]
    if last["role"] == "tool":
        return {"content": f"Tool said: {last['content']}"}
    users = [m for m in messages if m["role"] == "user"]
    text = last.get("content") or ""
    if text.startswith("add task:"):
        args = json.dumps({"title": text.split(":", 1)[1].strip()})
        call_id = f"call_fake_{len(users)}"
        return {"content": None, "tool_calls": [{"id": call_id, "name": "add_task", "arguments": args}]}
    return {"content": f"Echo {len(users)}: {text}"}


class _Handler(BaseHTTPRequestHandler):
    server_owner: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server_owner.requests.append(
            {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
        )
        if not self.path.endswith("/chat/completions"):
            return self._send(404, "application/json", b'{"error": {"message": "not found"}}')
        if body["messages"][-1].get("content") == "explode":
            return self._send(500, "application/json", b'{"error": {"message": "boom", "type": "server_error"}}')
        reply = reply_for(body["messages"])
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._send(200, "text/event-stream", _sse(body["model"], reply, include_usage))
        return self._send(200, "application/json", json.dumps(_completion(body["model"], reply)).encode())

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def _tool_calls(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in reply.get("tool_calls", ())
    ]


def _completion(model: str, reply: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
    if reply.get("tool_calls"):
        message["tool_calls"] = _tool_calls(reply)
    finish = "tool_calls" if reply.get("tool_calls") else "stop"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": _USAGE,
    }


def _sse(model: str, reply: dict[str, Any], include_usage: bool) -> bytes:
    """The reply as OpenAI streams it: role, content pieces or tool-call argument pieces, finish."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    content = reply.get("content") or ""
    deltas += [{"content": content[i : i + 4]} for i in range(0, len(content), 4)]
    for index, call in enumerate(reply.get("tool_calls", ())):
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        args = call["arguments"]
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": args[i : i + 5]}}]}
            for i in range(0, len(args), 5)
        ]
    finish = "tool_calls" if reply.get("tool_calls") else "stop"
    chunks = [_chunk(model, delta, None) for delta in deltas] + [_chunk(model, {}, finish)]
    if include_usage:
        chunks.append({**_chunk(model, {}, None), "choices": [], "usage": _USAGE})
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }

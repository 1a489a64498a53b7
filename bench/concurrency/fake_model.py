"""A fake OpenAI-compatible chat-completions server with a fixed latency per reply.

``python -m bench.concurrency.fake_model --fd N`` serves on an already bound socket (the bench
binds it, so the port is known before the process starts and cannot be taken meanwhile):

* ``POST /lat/{seconds}/v1/chat/completions``: the reply takes ``seconds`` from the moment the
  request body has arrived. Non-streaming: one JSON completion at that moment. Streaming
  (``"stream": true``): the role chunk at once, then ``CHUNKS`` content pieces spread evenly up to
  that moment (on a fixed schedule, so scheduling delays do not add up), the finish chunk, usage
  if asked, ``[DONE]``. The latency lives in the URL so one server serves every cell.
* ``GET /stats``: requests in flight now, the peak since the last reset, requests started and
  completed. ``GET /stats/timings``: for every request whose last user message starts with a tag
  ``[...]``, ``[arrived, finished]`` in ``time.monotonic()`` seconds (the same clock in every process
  of the machine). ``POST /stats/reset``: the peak restarts from the requests in flight now, the
  totals and timings from nothing.

A request is "in flight" from its arrival to its last byte (or the client hanging up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CHUNKS = 8
MAX_TIMINGS = 1_000_000
_TAG = re.compile(r"^\[([^\]]+)\]")  # "[session #n] ...": the bench's turn tag (bench.concurrency.load)
_USAGE = {"prompt_tokens": 10, "completion_tokens": CHUNKS, "total_tokens": 10 + CHUNKS}


class Gauge:
    """Requests in flight, the peak since the last reset, totals, and when each tagged request arrived
    and finished (``time.monotonic()``: one clock for every process on the machine)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.started = 0
        self.completed = 0
        self.timings: dict[str, list[float]] = {}

    def enter(self) -> None:
        self.in_flight += 1
        self.started += 1
        self.peak = max(self.peak, self.in_flight)

    def leave(self, completed: bool) -> None:
        self.in_flight -= 1
        self.completed += completed

    def snapshot(self) -> dict[str, int]:
        return {"in_flight": self.in_flight, "peak": self.peak, "started": self.started, "completed": self.completed}

    def reset(self) -> None:
        self.peak = self.in_flight
        self.started = self.completed = 0
        self.timings.clear()

    def arrived(self, body: dict[str, Any], at: float) -> str | None:
        """Note the arrival of a request whose last user message carries a turn's tag; return the tag."""
        users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
        content = users[-1].get("content") if users else None
        match = _TAG.match(content) if isinstance(content, str) else None
        if match is None or len(self.timings) >= MAX_TIMINGS:
            return None
        self.timings[match[1]] = [at, at]
        return match[1]

    def finished(self, tag: str | None) -> None:
        if tag is not None and tag in self.timings:
            self.timings[tag][1] = time.monotonic()


def create_app() -> Starlette:
    gauge = Gauge()

    async def completions(request: Request) -> Response:
        try:
            latency = float(request.path_params["latency"])
            body = await request.json()
            model = str(body["model"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": {"message": "bad request", "type": "invalid_request_error"}}, 400)
        gauge.enter()
        started = time.monotonic()
        tag = gauge.arrived(body, started)
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(_stream(gauge, tag, model, started, latency, usage),
                                     media_type="text/event-stream")
        completed = False
        try:
            await asyncio.sleep(max(0.0, started + latency - time.monotonic()))
            completed = True
        finally:
            gauge.leave(completed)
            gauge.finished(tag)
        return JSONResponse(_completion(model))

    async def stats(request: Request) -> Response:
        return JSONResponse(gauge.snapshot())

    async def timings(request: Request) -> Response:
        return JSONResponse(gauge.timings)

    async def reset(request: Request) -> Response:
        gauge.reset()
        return JSONResponse(gauge.snapshot())

    return Starlette(routes=[
        Route("/lat/{latency}/v1/chat/completions", completions, methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/stats/timings", timings, methods=["GET"]),
        Route("/stats/reset", reset, methods=["POST"]),
    ])


async def _stream(gauge: Gauge, tag: str | None, model: str, started: float, latency: float,
                  usage: bool) -> AsyncIterator[bytes]:
    completed = False
    try:
        yield _frame(_chunk(model, {"role": "assistant", "content": ""}, None))
        for i in range(CHUNKS):
            await asyncio.sleep(max(0.0, started + latency * (i + 1) / CHUNKS - time.monotonic()))
            yield _frame(_chunk(model, {"content": f"w{i} "}, None))
        tail = [_chunk(model, {}, "stop")]
        if usage:
            tail.append({**_chunk(model, {}, None), "choices": [], "usage": _USAGE})
        completed = True
        yield b"".join(_frame(c) for c in tail) + b"data: [DONE]\n\n"
    finally:
        gauge.leave(completed)
        gauge.finished(tag)


def _frame(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _completion(model: str) -> dict[str, Any]:
    text = "".join(f"w{i} " for i in range(CHUNKS))
    return {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": _USAGE}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency.fake_model")
    parser.add_argument("--fd", type=int, help="an already bound, listening socket to serve on")
    parser.add_argument("--port", type=int, default=0, help="else: bind 127.0.0.1 on this port")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=args.port,
                            log_level="warning", access_log=False, lifespan="off", backlog=4096,
                            timeout_keep_alive=120)
    server = uvicorn.Server(config)
    server.run(sockets=[sock] if sock else None)


if __name__ == "__main__":
    main()

"""LangGraph's side of the concurrency scenario: a minimal FastAPI app, one graph, ``AsyncPostgresSaver``.

``python -m bench.concurrency.lg_app --fd N --database-url URL --model-url URL --pool-max-size K``

The graph is the same kind as Isotope's: ``START -> model -> END`` over ``MessagesState``, the
model a ``ChatOpenAI`` on the bench's fake server, the state checkpointed by ``AsyncPostgresSaver``
on an ``AsyncConnectionPool`` of ``K`` connections (the settings its documentation asks for:
autocommit, dict rows, no prepared statements). Routes, shaped like Isotope's:

* ``POST /api/sessions/{id}/messages`` ``{"content": ...}``: one turn on thread ``id``. With
  ``Accept: text/event-stream`` the model's tokens as ``token`` events, then ``done`` once the run
  (checkpoints included) has finished, or ``error``; otherwise one JSON object.
* ``GET /api/sessions/{id}/messages``: ``{"message_count": n}`` from the latest checkpoint.
* ``GET /health``.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, SecretStr

log = logging.getLogger("bench.lg_app")
SYSTEM_PROMPT = "You are a helpful assistant; answer briefly."


class MessageIn(BaseModel):
    content: str


def create_app(database_url: str, model_url: str, pool_max_size: int, timeout_s: float) -> FastAPI:
    model = ChatOpenAI(model="bench", base_url=model_url, api_key=SecretStr("not-needed"), temperature=0.0,
                       timeout=timeout_s, max_retries=0)

    async def call_model(state: MessagesState) -> dict[str, Any]:
        reply = await model.ainvoke([SystemMessage(SYSTEM_PROMPT), *state["messages"]])
        return {"messages": [reply]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_edge(START, "model")
    builder.add_edge("model", END)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row,
                  "application_name": "bench-langgraph"}
        async with AsyncConnectionPool(database_url, min_size=1, max_size=pool_max_size, kwargs=kwargs,
                                       open=False) as pool:
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await saver.setup()
            app.state.graph = builder.compile(checkpointer=saver)
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/sessions/{session_id}/messages")
    async def send(session_id: str, body: MessageIn, request: Request) -> Response:
        graph = request.app.state.graph
        config = {"configurable": {"thread_id": session_id}}
        turn = {"messages": [HumanMessage(body.content)]}
        if "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(_events(graph, turn, config), media_type="text/event-stream")
        try:
            result = await graph.ainvoke(turn, config)
        except Exception as exc:
            log.warning("turn failed: %s", exc)
            return JSONResponse({"error": {"code": "engine_error", "message": type(exc).__name__}}, 502)
        messages = result["messages"]
        return JSONResponse({"session_id": session_id, "response": messages[-1].content,
                             "message_count": len(messages)})

    @app.get("/api/sessions/{session_id}/messages")
    async def messages(session_id: str, request: Request) -> dict[str, Any]:
        snapshot = await request.app.state.graph.aget_state({"configurable": {"thread_id": session_id}})
        return {"session_id": session_id, "message_count": len(snapshot.values.get("messages", []))}

    return app


async def _events(graph: Any, turn: dict[str, Any], config: dict[str, Any]) -> AsyncIterator[bytes]:
    try:
        async for chunk, _meta in graph.astream(turn, config, stream_mode="messages"):
            if isinstance(chunk, AIMessageChunk) and chunk.content:
                yield _frame("token", {"type": "token", "content": chunk.content})
    except Exception as exc:
        log.warning("turn failed: %s", exc)
        yield _frame("error", {"type": "error", "message": type(exc).__name__})
        return
    yield _frame("done", {"type": "done"})


def _frame(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency.lg_app")
    parser.add_argument("--fd", type=int, required=True, help="an already bound, listening socket")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--model-url", required=True, help="base URL of the OpenAI-compatible model (ends in /v1)")
    parser.add_argument("--pool-max-size", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120.0, help="model call timeout, seconds")
    args = parser.parse_args(argv)
    app = create_app(args.database_url, args.model_url, args.pool_max_size, args.timeout)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", backlog=4096,
                            timeout_keep_alive=120)
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=args.fd)])


if __name__ == "__main__":
    main()

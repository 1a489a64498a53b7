"""Isotope as a LangGraph checkpointer: ``IsotopeSaver`` (sync) and ``AsyncIsotopeSaver`` (async).

Three lines change in a LangGraph app::

    from app.adapters.langgraph import IsotopeSaver
    with IsotopeSaver.from_conn_string(DB_URI) as checkpointer:   # creates the schema
        graph = builder.compile(checkpointer=checkpointer)

A thread is an Isotope session (``isotope sessions list`` shows it; expiry, soft and hard delete
and statistics apply). Storage per step is flat in history: list channels (``messages``) are
stored as appends and only channels whose version changed get a row (see
:mod:`app.store.checkpoints`). Both savers implement every ``BaseCheckpointSaver`` capability:
put, put_writes, get_tuple, list, delete_thread, copy_thread, prune and delete_for_runs. The
async methods run the same code in a worker thread, so the event loop never blocks on I/O.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from app.adapters.lg_lists import ListCache, fresh
from app.core.postgres_session_manager import SessionManager
from app.store import codec
from app.store.base import check_session_id
from app.store.checkpoints import CheckpointRow, CheckpointStore, EpochTaken, StepRows

__all__ = ["AsyncIsotopeSaver", "IsotopeSaver"]

# A session row is touched (last_updated, expiry) once per run and otherwise at most this often:
# a run writes three checkpoints within milliseconds, and each touch is a non-HOT update.
TOUCH_INTERVAL_S = 1.0
_EPOCH_RETRIES = 3
ITEM_JSON = "isotope.json"  # a list element in Isotope's codec (app.store.codec)


def _inline(value: Any) -> bool:
    """Stored in the checkpoint's JSON instead of a blob (as PostgresSaver does)."""
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and "\x00" not in value


class IsotopeSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpoints in Isotope's PostgreSQL schema."""

    def __init__(self, store: CheckpointStore, *, serde: SerializerProtocol | None = None,
                 expires_in_hours: float | None = None, cache_threads: int = 1024) -> None:
        super().__init__(serde=serde)
        self.store = store
        self.expires_in_hours = expires_in_hours
        self._lists = ListCache(cache_threads)
        self._touched: dict[str, float] = {}
        self._touch_lock = threading.Lock()

    # ------------------------------------------------------------------ construction

    @classmethod
    @contextmanager
    def from_conn_string(cls, conn_string: str, *, serde: SerializerProtocol | None = None,
                         expires_in_hours: float | None = None, pool_size: int = 4) -> Iterator[IsotopeSaver]:
        """A saver on its own connection pool; the schema is created or upgraded on entry."""
        store = CheckpointStore(conn_string, pool_size=pool_size).open()
        try:
            yield cls(store, serde=serde, expires_in_hours=expires_in_hours)
        finally:
            store.close()

    @classmethod
    def from_manager(cls, manager: SessionManager, **kwargs: Any) -> IsotopeSaver:
        """A saver on the database of an Isotope session manager (opened if needed).

        The saver has its own small pool; close it with :meth:`close` when done.
        """
        if manager.pg is None:
            raise ValueError("this SessionManager stores sessions in files; LangGraph checkpoints need "
                             "postgres_sessions: true")
        manager.open()
        conninfo = manager.pg.conninfo
        if not conninfo:
            raise ValueError("the SessionManager's PostgreSQL is not running; open the manager first")
        manager.pg.migrate()
        return cls(CheckpointStore(conninfo, migrate_on_open=False).open(), **kwargs)

    @classmethod
    def from_engine(cls, engine: Any, **kwargs: Any) -> IsotopeSaver:
        """A saver on the database of an :class:`~app.core.engine.IsotopeEngine`'s manager."""
        return cls.from_manager(engine.manager, **kwargs)

    def setup(self) -> None:
        """Create or upgrade the schema (``from_conn_string`` already did)."""
        self.store.setup()

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------ versions

    def get_next_version(self, current: str | None, channel: None) -> str:
        # Zero-padded so string order is numeric order; the random tail keeps versions of forks
        # apart. 21 characters instead of PostgresSaver's 49, repeated in every checkpoint row.
        current_v = 0 if current is None else current if isinstance(current, int) else int(current.split(".")[0])
        return f"{current_v + 1:012d}.{random.getrandbits(32):08x}"

    # ------------------------------------------------------------------ reads

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        known = self._lists.known(thread_id, ns)
        row = self.store.get(thread_id, ns, checkpoint_id, known)
        if row is not None and known and not self._holds_unsent(row):
            row = self.store.get(thread_id, ns, checkpoint_id)  # a concurrent step moved the cache
        if row is None:
            if checkpoint_id is None:
                self._lists.forget(thread_id, ns)
            return None
        return self._tuple(row, remember=True)

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        conf = config["configurable"] if config else {}
        thread_id = conf.get("thread_id")
        rows = self.store.list(
            str(thread_id) if thread_id is not None else None, conf.get("checkpoint_ns"),
            get_checkpoint_id(config) if config else None, filter,
            get_checkpoint_id(before) if before else None, limit)
        for row in rows:
            yield self._tuple(row, remember=False)

    def _tuple(self, row: CheckpointRow, remember: bool) -> CheckpointTuple:
        loads = self.serde.loads_typed
        values: dict[str, Any] = dict(row.checkpoint.get("channel_values") or {})
        for channel, kind, blob in row.blobs:
            values[channel] = loads((kind, blob or b""))
        fetched: dict[str, list[Any]] = {}
        for channel, kind, blob in row.items:
            fetched.setdefault(channel, []).append(self._load_item(kind, blob or b""))
        for channel, segments in row.lists.items():
            if channel in fetched or not segments:
                pristine = fetched.get(channel, [])
                if remember:
                    self._lists.remember(row.thread_id, row.checkpoint_ns, channel, segments, pristine)
            else:  # not sent: this process holds exactly these segments (_holds_unsent)
                state = self._lists.get(row.thread_id, row.checkpoint_ns, channel)
                pristine = state.pristine if state is not None else []
            values[channel] = [fresh(p) for p in pristine]
        writes = sorted(row.writes, key=lambda w: writes_sort_key(w[4], w[0], w[5]))
        base = {"thread_id": row.thread_id, "checkpoint_ns": row.checkpoint_ns}
        return CheckpointTuple(
            config={"configurable": {**base, "checkpoint_id": row.checkpoint_id}},
            checkpoint={**row.checkpoint, "id": row.checkpoint_id, "channel_values": values},  # type: ignore[typeddict-item]
            metadata=row.metadata,  # type: ignore[arg-type]
            parent_config=({"configurable": {**base, "checkpoint_id": row.parent_id}} if row.parent_id else None),
            pending_writes=[(task, channel, loads((kind, blob or b""))) for task, channel, kind, blob, _, _ in writes],
        )

    def _holds_unsent(self, row: CheckpointRow) -> bool:
        """Whether the cache still holds every list the read did not send."""
        sent = {channel for channel, _, _ in row.items}
        for channel, segments in row.lists.items():
            if segments and channel not in sent:
                state = self._lists.get(row.thread_id, row.checkpoint_ns, channel)
                if state is None or state.segments != segments:
                    return False
        return True

    def _dump_item(self, item: Any) -> tuple[str, bytes]:
        """A list element: LangChain messages in Isotope's compact JSON when it round-trips exactly
        (a fifth smaller than msgpack, decoded without importing names from the data), else serde."""
        if isinstance(item, BaseMessage):
            encoded = codec.encode(item, "message")
            if not encoded.skipped and not encoded.dropped:
                text = codec.dumps(encoded.value)
                if codec.loads(text) == item:
                    return ITEM_JSON, text.encode()
        return self.serde.dumps_typed(item)

    def _load_item(self, kind: str, blob: bytes) -> Any:
        return codec.loads(blob) if kind == ITEM_JSON else self.serde.loads_typed((kind, blob))

    # ------------------------------------------------------------------ writes

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        conf = config["configurable"]
        thread_id = check_session_id(str(conf["thread_id"]), "thread_id")
        ns = conf.get("checkpoint_ns", "")
        for attempt in range(_EPOCH_RETRIES + 1):
            step, plans = self._step(config, checkpoint, metadata, new_versions, fresh_epoch=attempt > 0)
            try:
                self.store.put(step)
            except EpochTaken:
                if attempt == _EPOCH_RETRIES:
                    raise
                continue
            for channel, (segments, snaps) in plans.items():
                self._lists.remember(thread_id, ns, channel, segments, snaps)
            break
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    def _step(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
              new_versions: ChannelVersions, fresh_epoch: bool) -> tuple[StepRows, dict[str, Any]]:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        ns = conf.get("checkpoint_ns", "")
        values = checkpoint["channel_values"]
        # The id is the row's key; the JSON need not carry it a second time.
        saved: dict[str, Any] = {k: v for k, v in checkpoint.items() if k not in ("channel_values", "id")}
        saved["channel_values"] = {k: v for k, v in values.items() if _inline(v)}
        step = StepRows(thread_id, ns, checkpoint["id"], conf.get("checkpoint_id"), saved,
                        dict(get_serializable_checkpoint_metadata(config, metadata)),
                        touch=self._should_touch(thread_id, metadata.get("source") == "input"),
                        expires_in_hours=self.expires_in_hours)
        plans: dict[str, Any] = {}
        for channel, value in values.items():
            # Every list of the checkpoint is described by segments; elements are written only
            # where it differs from what this process last stored (usually: the new ones).
            if type(value) is list:
                plan = self._lists.plan(thread_id, ns, channel, value, fresh_epoch)
                step.lists[channel] = plan.segments
                for offset, item in enumerate(plan.new):
                    step.items.append((channel, plan.epoch, plan.start + offset, *self._dump_item(item)))
                plans[channel] = (plan.segments, plan.pristine)
        for channel, version in new_versions.items():
            # A channel without a value has no row: the load finds none and leaves it out.
            value = values.get(channel)
            if channel in values and not _inline(value) and type(value) is not list:
                step.blobs.append((channel, str(version), *self.serde.dumps_typed(value)))
        return step, plans

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        conf = config["configurable"]
        dumps = self.serde.dumps_typed
        rows = [(WRITES_IDX_MAP.get(channel, idx), channel, *dumps(value))
                for idx, (channel, value) in enumerate(writes)]
        self.store.put_writes(str(conf["thread_id"]), conf.get("checkpoint_ns", ""), conf["checkpoint_id"],
                              task_id, task_path, rows, upsert=all(w[0] in WRITES_IDX_MAP for w in writes))

    def _should_touch(self, thread_id: str, run_starts: bool) -> bool:
        # Once per run (its input checkpoint), so listings order threads by their last run, and
        # at least every TOUCH_INTERVAL_S for runs that resume without input.
        now = time.monotonic()
        with self._touch_lock:
            last = self._touched.get(thread_id)
            if not run_starts and last is not None and now - last < TOUCH_INTERVAL_S:
                return False
            if len(self._touched) > 4096:
                self._touched.clear()
            self._touched[thread_id] = now
            return True

    def _forget_touch(self, thread_id: str) -> None:
        with self._touch_lock:
            self._touched.pop(thread_id, None)

    # ------------------------------------------------------------------ thread-wide operations

    def delete_thread(self, thread_id: str) -> None:
        self.store.delete_thread(str(thread_id))
        self._forget(str(thread_id))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.store.copy_thread(str(source_thread_id), check_session_id(str(target_thread_id), "thread_id"))
        self._forget(str(target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self.store.prune([str(t) for t in thread_ids], strategy)
        for thread_id in thread_ids:
            self._forget(str(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.store.delete_for_runs(run_ids)
        with self._touch_lock:
            threads = list(self._touched)
        for thread_id in threads:
            self._lists.forget(thread_id)

    def _forget(self, thread_id: str) -> None:
        self._lists.forget(thread_id)
        self._forget_touch(thread_id)

    # ------------------------------------------------------------------ async: the same code, off the loop

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        items = await asyncio.to_thread(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in items:
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)


class AsyncIsotopeSaver(IsotopeSaver):
    """The async face of :class:`IsotopeSaver` (``graph.ainvoke``/``astream``), like AsyncPostgresSaver."""

    @classmethod
    @asynccontextmanager
    async def from_conn_string(cls, conn_string: str, *, serde: SerializerProtocol | None = None,  # type: ignore[override]
                               expires_in_hours: float | None = None,
                               pool_size: int = 4) -> AsyncIterator[AsyncIsotopeSaver]:
        """A saver on its own connection pool; the schema is created or upgraded on entry."""
        store = await asyncio.to_thread(lambda: CheckpointStore(conn_string, pool_size=pool_size).open())
        try:
            yield cls(store, serde=serde, expires_in_hours=expires_in_hours)
        finally:
            await asyncio.to_thread(store.close)

    async def asetup(self) -> None:
        await asyncio.to_thread(self.store.setup)

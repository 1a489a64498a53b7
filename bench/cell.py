"""One cell: a system at one history length H.

Following the anchor method: N sessions seeded with H-2 messages, a CHECKPOINT, one untimed
warm-up turn per session (so every session holds exactly H messages and the pages a turn touches
are already dirty), then one timed turn per session between two probe positions (WAL, growth,
write transactions), then one timed full load per session, checked against what was written.

Added to the method, because this machine is shared and fsync times drift by 10x within
minutes: a *paired* latency sample. After the probed window every session plays one more turn,
alternating turn by turn with a reference floor on a database of its own, so the system and the
floor are timed at the same moment. The ratio of those two medians is what the goals use; the
block figures above stay as the anchor defines them.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

from bench import corpus
from bench.phases import new_ids, play_turn
from bench.probes import Probe
from bench.stats import median, summary, timed_ms
from bench.systems import System

VACUUM = "VACUUM"


@dataclass
class Reference:
    """The reference floor: a Floor adapter and a probe on a database the run reserves for it."""

    system: System
    probe: Probe


def measure_cell(
    system: System, probe: Probe, history: int, sessions: int, reference: Reference | None = None
) -> dict[str, Any]:
    ids = _seed(system, history, sessions)
    ref_ids = _seed_reference(reference, history, sessions)
    probe.checkpoint()
    for sid in ids:
        play_turn(system, sid, history - 2)
    if reference is not None:
        for rid in ref_ids:
            play_turn(reference.system, rid, history - 2)
    cell = _probed_turns(system, probe, ids, history)
    position = history + 2
    if reference is not None:
        cell["paired"] = _paired_turns(system, reference.system, ids, ref_ids, position)
        position += 2
    cell["load_ms"] = summary(_timed_loads(system, ids, position))
    return cell


def _seed(system: System, history: int, sessions: int) -> list[str]:
    ids = new_ids(sessions)
    for sid in ids:
        system.create(sid, corpus.messages(sid, 0, history - 2))
    return ids


def _seed_reference(reference: Reference | None, history: int, sessions: int) -> list[str]:
    if reference is None:
        return []
    ids = _seed(reference.system, history, sessions)
    # Leave autovacuum nothing to do here: it must not run inside the measured system's window.
    reference.probe.execute(VACUUM)
    return ids


def _probed_turns(system: System, probe: Probe, ids: list[str], history: int) -> dict[str, Any]:
    turns = [(sid, corpus.text(sid, history), corpus.text(sid, history + 1)) for sid in ids]
    gc.collect()
    inner_from = len(system.persist_ms) if system.persist_ms is not None else 0
    start = probe.position()
    latencies = [timed_ms(system.turn, sid, human, ai)[0] for sid, human, ai in turns]
    end = probe.position()
    inner = latencies if system.persist_ms is None else system.persist_ms[inner_from:]
    fpi = probe.fpi_bytes(start, end)
    count = len(ids)
    return {
        "history": history,
        "sessions": count,
        "turn_ms": summary(latencies),
        "persist_ms": summary(inner),
        "wal_bytes_per_turn": probe.wal_bytes(start, end) / count,
        "fpi_bytes_per_turn": None if fpi is None else fpi / count,
        "growth_bytes_per_turn": (end.relation_bytes - start.relation_bytes) / count,
        "xacts_per_turn": (end.next_xid - start.next_xid) / count,
        "checkpoint_in_window": None if start.redo_lsn is None else start.redo_lsn != end.redo_lsn,
        "autovacuum_at_edges": start.autovacuum_workers + end.autovacuum_workers > 0,
    }


def _paired_turns(system: System, floor: System, ids: list[str], ref_ids: list[str], position: int) -> dict[str, Any]:
    """One more turn per session, alternating with a floor turn; who goes first alternates too."""
    own: list[float] = []
    ref: list[float] = []
    gc.collect()
    for index, (sid, rid) in enumerate(zip(ids, ref_ids, strict=True)):
        pair = [(own, system, sid), (ref, floor, rid)]
        for out, target, session in pair if index % 2 == 0 else pair[::-1]:
            human, ai = corpus.text(session, position), corpus.text(session, position + 1)
            out.append(timed_ms(target.turn, session, human, ai)[0])
    return {"system_ms": summary(own), "floor_ms": summary(ref), "ratio": median(own) / median(ref)}


def _timed_loads(system: System, ids: list[str], count: int) -> list[float]:
    gc.collect()
    latencies = []
    for sid in ids:
        ms, loaded = timed_ms(system.load, sid)
        latencies.append(ms)
        system.verify(loaded, count, corpus.text(sid, count - 1))
    return latencies

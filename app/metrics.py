"""Prometheus metrics, shared by the store, the engine and the API (served at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

SAVE_SECONDS = Histogram(
    "isotope_save_seconds", "Time to make a session save durable", ["backend"], buckets=_LATENCY_BUCKETS
)
LOAD_SECONDS = Histogram(
    "isotope_load_seconds", "Time to load a session", ["backend"], buckets=_LATENCY_BUCKETS
)
STORE_ERRORS = Counter(
    "isotope_store_errors_total", "Store operations that failed against PostgreSQL", ["operation"]
)
FALLBACK_ACTIVE = Gauge(
    "isotope_fallback_active", "1 while PostgreSQL is unreachable and writes go to the outage spool"
)
SPOOL_DEPTH = Gauge("isotope_spool_depth", "Writes waiting in the outage spool for PostgreSQL")
SPOOL_REPLAYED = Counter("isotope_spool_replayed_total", "Spooled writes replayed into PostgreSQL")
TURNS = Counter("isotope_turns_total", "Engine turns", ["outcome"])
TURN_SECONDS = Histogram("isotope_turn_seconds", "Engine turn latency", buckets=_LATENCY_BUCKETS)
SESSIONS_ACTIVE = Gauge("isotope_sessions_active", "Active sessions (as of the last count)")


_save_by_backend: dict[str, object] = {}


def observe_save(backend: str, seconds: float) -> None:
    """SAVE_SECONDS for ``backend``; the labelled child is looked up once (saves are hot)."""
    child = _save_by_backend.get(backend)
    if child is None:
        child = _save_by_backend[backend] = SAVE_SECONDS.labels(backend)
    child.observe(seconds)  # type: ignore[attr-defined]

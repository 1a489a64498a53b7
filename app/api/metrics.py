"""API-level Prometheus metrics (the store's and the engine's are in :mod:`app.metrics`)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_REQUESTS = Counter(
    "isotope_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "isotope_http_request_seconds", "HTTP request duration (a streamed turn: until its last event)",
    ["method", "route"], buckets=_BUCKETS,
)
CLEANUP_RUNS = Counter(
    "isotope_cleanup_runs_total", "Periodic expiry runs: done here, skipped (another instance held the job), failed",
    ["outcome"],
)
CLEANUP_SESSIONS = Counter(
    "isotope_cleanup_sessions_total", "Sessions the periodic expiry task changed", ["action"]
)
TURNS_RUNNING = Gauge("isotope_api_turns_running", "Turns running in this server now")

CONTENT_TYPE = CONTENT_TYPE_LATEST


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_SECONDS.labels(method, route).observe(seconds)


def render() -> bytes:
    """Every registered metric in the Prometheus text format."""
    return generate_latest(REGISTRY)

"""Smoke run of the benchmark harness: ``python -m bench --quick`` end to end.

It proves every system and every metric comes out, in Markdown and JSON, against the test
server. It asserts nothing about times: benchmarks never gate CI on a duration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.summary import CELL_METRICS
from bench.systems import REGISTRY

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_bench_writes_every_system_and_metric(pg_admin_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--database-url", pg_admin_url, "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    result = json.loads((tmp_path / "latest-quick.json").read_text())
    markdown = (tmp_path / "latest-quick.md").read_text()
    assert list((tmp_path / "runs").glob("*-quick.json"))
    assert markdown.strip() in done.stdout

    (rep,) = result["repetitions"]
    for name in REGISTRY:
        system = rep["systems"][name]
        assert system["available"], system.get("reason")
        assert not system["errors"], system["errors"]
        assert set(system["cells"]) == {"10", "100", "1000"}
        assert set(system["throughput"]) == {"1", "4", "8"}
        assert system["listing"]["sessions"] > 0
        assert name in markdown
        for metric in CELL_METRICS:
            if metric.key == "fpi_bytes_per_turn":
                continue  # only where pg_walinspect or a local pg_waldump can see the WAL
            cells = result["summary"][metric.key][name]
            assert all(cells[h]["values"][0] is not None for h in cells), (name, metric.key)
    for metric in CELL_METRICS:
        assert metric.title in markdown
    for title in ("Throughput", "List the 50 most recently updated", "Goals of issue 7", "SELECT 1"):
        assert title in markdown
    assert {g["status"] for g in result["goals"]} <= {"met", "missed"}
    (cell,) = result["concurrency"]["cells"]  # --quick: one small cell of the concurrency scenario
    assert {name for name, res in cell["systems"].items() if "error" not in res} == {"isotope", "langgraph"}
    assert "Concurrency at model latency" in markdown


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["sse", "json"])
def test_concurrency_scenario_runs_isotope_and_langgraph(pg_admin_url: str, tmp_path: Path, mode: str) -> None:
    """``--concurrency`` with 4 clients and a 0.2 s model: both servers play every turn, every turn is
    stored once, the model and pg_stat_activity gauges report. No figure is judged."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    args = ["--concurrency", "--concurrency-cells", "4x0.2", "--concurrency-turns", "2"]
    if mode == "json":
        args.append("--concurrency-json")
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--database-url", pg_admin_url, "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    conc = json.loads((tmp_path / "latest-concurrency.json").read_text())["concurrency"]
    markdown = (tmp_path / "latest-concurrency.md").read_text()
    assert markdown.strip() in done.stdout
    assert conc["stream"] is (mode == "sse")
    (cell,) = conc["cells"]
    assert (cell["clients"], cell["latency_s"]) == (4, 0.2)
    for system in ("isotope", "langgraph"):
        res = cell["systems"][system]
        assert "error" not in res, res
        assert (res["turns_ok"], res["turns_failed"], res["warmup_failed"]) == (8, 0, 0), res["failures"]
        assert res["stored"] == {"sessions": 4, "mismatched": 0, "examples": []}
        # one model request per turn, each finished within the window; never more in flight than clients
        assert res["model"]["started"] == res["model"]["completed"] == 8
        assert 1 <= res["model"]["peak"] <= 4
        assert res["pg"]["polls"] > 0 and res["pg"]["error"] is None
        assert 1 <= res["pg"]["peak"] <= conc["pool_max_size"]
        # the fake model really waits: no turn can be shorter than its latency
        assert min(s for s in res["samples_s"]) >= 0.2
        assert res["ratio"] > 0 and res["p50_ratio"] >= 1.0
        # every turn's model request was found by its tag, and happened inside the turn
        assert res["phases_ms"]["unmatched"] == 0
        assert res["phases_ms"]["before"]["p50"] >= 0 and res["phases_ms"]["after"]["p50"] >= 0
        assert conc["labels"][system] in markdown
    assert "Concurrency at model latency" in markdown
    assert {g["status"] for g in conc["goals"]} == {"n/a"}  # no goal cell ran

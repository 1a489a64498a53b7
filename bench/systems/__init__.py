"""The benchmarked systems, in report order. Modules are imported lazily so a missing or broken
third-party library costs only its own row, and throughput workers import only what they run."""

from __future__ import annotations

import importlib

from bench.systems.base import LoadMismatch, System, Unavailable

FLOOR = "floor"

# name -> "module:Class"
REGISTRY: dict[str, str] = {
    "isotope_save": "bench.systems.isotope_save:IsotopeSave",
    "isotope_engine": "bench.systems.isotope_engine:IsotopeEngineTurn",
    "langgraph": "bench.systems.langgraph_saver:LangGraphSaver",
    "langgraph_isotope": "bench.systems.langgraph_isotope:LangGraphIsotope",
    "langchain_postgres": "bench.systems.langchain_pg:LangchainPostgres",
    "agents_sdk": "bench.systems.agents_sdk:AgentsSdk",
    FLOOR: "bench.systems.floor:Floor",
}


def system_class(name: str) -> type[System]:
    """The adapter class of ``name``; raises Unavailable when its module cannot be imported."""
    module_name, _, class_name = REGISTRY[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Unavailable(f"cannot import {module_name}: {exc}") from exc
    cls: type[System] = getattr(module, class_name)
    return cls


def system_modules(names: list[str]) -> list[str]:
    """The adapter modules of ``names`` (for preloading into worker processes)."""
    return [REGISTRY[name].partition(":")[0] for name in names]


__all__ = ["FLOOR", "REGISTRY", "LoadMismatch", "System", "Unavailable", "system_class", "system_modules"]

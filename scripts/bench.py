#!/usr/bin/env python3
"""Run the benchmark (bench/): Isotope beside LangGraph, langchain-postgres and the Agents SDK.

    python3 scripts/bench.py              # full run on a private embedded PostgreSQL 16
    python3 scripts/bench.py --quick      # under 2 minutes
    python3 scripts/bench.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

import sys

from _bootstrap import exec_in_venv

exec_in_venv(["python", "-m", "bench", *sys.argv[1:]], extras="bench")

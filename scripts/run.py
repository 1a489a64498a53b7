#!/usr/bin/env python3
"""Chat with Isotope on the embedded PostgreSQL (installs into .venv on first use).

    python3 scripts/run.py                 # pick a recent session or start one
    python3 scripts/run.py chat -m "add task: ship it"
    python3 scripts/run.py doctor          # any isotope subcommand works
"""

import sys

from _bootstrap import exec_in_venv

args = sys.argv[1:] or ["chat"]
exec_in_venv(["isotope", *args])

#!/usr/bin/env python3
"""Lint (ruff) and type-check (mypy --strict) the package."""

import subprocess
import sys

from _bootstrap import BIN, REPO, ensure

ensure("dev")
codes = [subprocess.run([str(BIN / "ruff"), "check", "app", "tests", "bench"], cwd=REPO).returncode,
         subprocess.run([str(BIN / "mypy"), "--strict", "app"], cwd=REPO).returncode]
sys.exit(max(codes))

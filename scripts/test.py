#!/usr/bin/env python3
"""Run the whole test suite (slow, fault and multi-process tests included).

    python3 scripts/test.py               # what CI runs
    python3 scripts/test.py -k codec      # extra arguments go to pytest

Tests start their own embedded PostgreSQL unless ISOTOPE_TEST_DATABASE_URL names a server.
"""

import sys

from _bootstrap import exec_in_venv

exec_in_venv(["python", "-m", "pytest", *sys.argv[1:]], extras="dev")

"""Create ``.venv`` next to the repository and install Isotope into it, once per change of pyproject.

Only needs the Python that runs it (3.11+). Used by run.py, test.py, bench.py and lint.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".isotope-installed"


def ensure(extras: str = "") -> Path:
    """Make sure .venv holds Isotope with ``extras`` (e.g. "dev"); return its python."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs under whatever python3 is
        sys.exit(f"Isotope needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    python = BIN / "python"
    if not python.exists():
        print(f"creating {VENV} ...", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    installed = STAMP.read_text().split() if STAMP.exists() else []
    have = set(installed[1:]) if installed and installed[0] == digest else None
    if have is None or (extras and extras not in have):
        target = f".[{extras}]" if extras else "."
        print(f"installing {target} into {VENV} (first run only) ...", file=sys.stderr, flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-e", target], cwd=REPO, check=True)
        extras_now = (have or set()) | ({extras} if extras else set())
        STAMP.write_text(" ".join([digest, *sorted(extras_now)]))
    return python


def exec_in_venv(args: list[str], extras: str = "") -> None:
    """Replace this process with ``args`` run from the venv (args[0] names a venv script)."""
    ensure(extras)
    program = str(BIN / args[0])
    os.chdir(REPO)
    os.execv(program, [program, *args[1:]])

"""Files only Isotope's own OS user can read: directories 0700, files 0600, written atomically.

Session copies, spool records and the embedded cluster hold whole conversations. Everything under
``data_dir`` is created private whatever the umask; a directory Isotope creates is 0700 and a file
0600. Directories *above* ``data_dir`` are never touched: their modes are the administrator's.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, mode: int = DIR_MODE) -> Path:
    """Create ``path`` (and missing parents) with ``mode``. If ``path`` exists and is ours, take away
    what group and others may do beyond ``mode``; existing parents are never changed. Returns ``path``."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first
            directory.mkdir(mode=mode)
        _tighten(directory, mode)
    if not missing:
        _tighten(path, mode)
    return path


def _tighten(path: Path, mode: int) -> None:
    st = path.lstat()
    current = stat.S_IMODE(st.st_mode)
    extra = current & 0o077 & ~mode  # rights of group and others that ``mode`` does not give
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and extra:
        path.chmod(current & ~extra)


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """``os.open`` creating the file 0600 (never following a symlink planted at ``path``)."""
    return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)


def write_private(path: Path, text: str, tmp: Path | None = None) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename) as a 0600 file.

    ``tmp`` names the temporary file (callers that clean up after killed writers choose it); it
    is replaced if a stale one is left. The directory is not fsync'd here.
    """
    tmp = tmp or path.with_name(f".{path.name}.tmp{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a stale file of a dead writer with our pid: never reuse its mode or owner
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)

"""The one way eecc writes a file: whole or not at all."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from eecc import signals


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix, so numpy adds none); on success it replaces `path`.

    A reader, a concurrent writer or a crash sees the old file or the whole new one, never a torn write;
    on error the temporary file is removed and `path` is left as it was. The file gets the mode the user's umask
    gives a new file (mkstemp's 0600 would hide a shared cache from other users).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with signals.held():  # a Ctrl-C or SIGTERM arrives after mkstemp, inside the cleanup (eecc/signals.py)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
            os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process's umask. Linux shows it in /proc/self/status; elsewhere os.umask must set it to read it,
    and a file another thread creates in that instant gets the wrong mode."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_umask_allows(folder: Path) -> Path:
    """`folder` (made by tempfile.mkdtemp, mode 0700) with the mode a plain mkdir gives under the user's umask:
    a bundle others on a shared machine (a CI job, a firmware colleague, a web server) can read."""
    os.chmod(folder, 0o777 & ~umask())
    return folder

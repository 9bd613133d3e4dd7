"""Writing files without losing what was there: unique temporary names, atomic renames.

Imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["TEMP_PREFIX", "write_atomic"]

#: Start of the name of every temporary file this package writes beside a target.
TEMP_PREFIX = ".napari_im2im_uq-tmp-"


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a uniquely named temporary file and a rename.

    The temporary file is made by :func:`tempfile.mkstemp` in the target's folder (so the
    rename is atomic and no file of the user's, e.g. ``path + ".tmp"``, is ever touched);
    readers see the old content or the new one, never a part. On any error the temporary
    file is removed and ``path`` is unchanged.

    Parameters
    ----------
    path : path-like
        The file to write; its folder must exist.
    data : bytes or str
        The content (a str is encoded as UTF-8).

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "rec.json.tmp").write_text("the user's")
    ...     _ = write_atomic(Path(tmp) / "rec.json", "{}")
    ...     sorted(p.name for p in Path(tmp).iterdir())
    10
    ['rec.json', 'rec.json.tmp']
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path

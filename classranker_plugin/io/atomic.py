"""Atomic outputs: a failed or interrupted run never leaves a file or folder that looks complete.

``atomic_write(path)`` yields a temporary path in the same folder (so the final ``os.replace`` is a
rename on one file system) and moves it onto ``path`` only when the block succeeds.
``atomic_output_dir(outdir)`` does the same for a set of files: they are written into a hidden
``outdir/.partial-XXXXXXXX`` folder and moved into ``outdir`` one by one on success, an optional
marker file last. On any exception (KeyboardInterrupt included) the temporary file or folder is
removed (files already moved are taken back, folders it created are removed when empty) and the
exception propagates. The command line turns SIGTERM into such an exception. A process killed with
SIGKILL can leave a hidden ``.partial`` entry behind; it never carries the final name.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

from ..errors import InputError

PathLike = Union[str, os.PathLike]
PARTIAL_PREFIX = ".partial-"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_write(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary name keeps the suffix (``.x.1a2b3c4d.partial.star``) so that libraries which
    look at the extension write the right format. The caller must create the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{path}: nothing was written")
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _move_tree(src: Path, dst: Path, moved: list) -> None:
    """Move every file under ``src`` to the same relative place under ``dst`` (os.replace),
    appending each target to ``moved``."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink():
            target.mkdir(exist_ok=True)
            _move_tree(entry, target, moved)
        else:
            os.replace(entry, target)
            moved.append(target)


def check_output_dir(outdir: PathLike) -> Path:
    """InputError unless ``outdir`` is (or can be made) a folder this process can write in.

    Run before any work, so that a bad output path fails in a second, not after the scoring.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError("the output path is an existing file, not a folder", outdir,
                         "give a folder name for --o (it is created if missing)")
    existing = next((p for p in [outdir, *outdir.parents] if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise InputError("the output path lies under a file", outdir, "give a folder name for --o")
    try:
        probe = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX + "probe-", dir=existing))
        probe.rmdir()
    except OSError as error:
        raise InputError(f"cannot write in {existing} ({error.strerror or error})", outdir,
                         "give an output folder on a writable disk where you have write permission") from error
    return outdir


@contextmanager
def atomic_output_dir(outdir: PathLike, marker: Optional[str] = None,
                      marker_text: str = "") -> Iterator[Path]:
    """Yield a hidden temporary folder inside ``outdir``; on success move its contents into ``outdir``.

    outdir:      the final folder (created if missing; files already there are kept, same names
                 are replaced)
    marker:      optional file name written in ``outdir`` after everything else was moved (e.g. a
                 "done" flag), with ``marker_text`` as its content
    """
    outdir = Path(outdir)
    created = [p for p in [outdir, *outdir.parents] if not p.exists()]
    outdir.mkdir(parents=True, exist_ok=True)
    tmp = outdir / f"{PARTIAL_PREFIX}{secrets.token_hex(4)}"
    tmp.mkdir()
    moved = []
    try:
        yield tmp
        _move_tree(tmp, outdir, moved)
        if marker:
            with atomic_write(outdir / marker) as marker_tmp:
                marker_tmp.write_text(marker_text)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for target in moved:  # interrupted while moving: take back what was moved
            target.unlink(missing_ok=True)
        for folder in created:  # folders this call made, if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(tmp, ignore_errors=True)

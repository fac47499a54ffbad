"""The particles block of a RELION data.star, streamed: class numbers counted and rows subset in chunks.

Reading a data.star of 10^7 particles with starfile (pandas) takes minutes and memory that grows
with the count. Scoring needs only one column of it, rlnClassNumber, and the subset is the same
rows copied verbatim. This is that one targeted scanner (everything else is read with starfile,
see :mod:`.star`), in three modules:

- :mod:`.particle_header`: :func:`find_particle_loop` reads the header lines up to the particles
  loop's labels (RELION 3.1+: ``data_optics`` then ``data_particles``; RELION 3.0: one unnamed
  ``data_`` table).
- :mod:`.particle_rows`: :func:`scan_rows` yields the rows in chunks with the class number of each
  (C inner loops or numpy, chunks tokenised on worker threads, every row's field count checked).
- here, the passes: :func:`count_particles`, :func:`particle_classes`, and :func:`write_subset`, which
  copies the header (optics kept) and the selected rows verbatim, in one pass, to one or two files
  through the atomic writer; :func:`stream_particles` builds the light
  :class:`~classranker_plugin.classset.ParticleSet`.

The output of :func:`write_subset` is byte for byte what the earlier whole-file copy wrote: the
file up to the end of the loop labels, the selected rows (blank and comment lines of the rows
dropped), then the rest of the file from the next ``data_`` block.
"""
from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..classset import ParticleSet, Selection
from ..errors import InputError
from .atomic import atomic_write
from .particle_header import (CLASS_LABEL, ParticleLoop, PathLike, find_particle_loop, header_bytes,
                              read_optics)
from .particle_rows import CHUNK_BYTES, ScanEnd, copy_rows, scan_rows, scan_threads

__all__ = ["CHUNK_BYTES", "CLASS_LABEL", "ParticleLoop", "RowCountMismatch", "ScanEnd", "count_particles",
           "find_particle_loop", "header_bytes", "particle_classes", "read_optics", "scan_rows",
           "scan_threads", "stream_particles", "stream_writer", "write_subset"]


class _Counts:
    """Particles per class number: a bincount array for 0 <= class < 2^20, a dict for the rest."""

    def __init__(self):
        self.small = np.zeros(0, dtype=np.int64)
        self.other: dict = {}

    def add(self, classes: np.ndarray) -> None:
        if not classes.size:
            return
        if classes.min() >= 0 and classes.max() < 1 << 20:
            binned = np.bincount(classes)
            if len(binned) > len(self.small):
                self.small = np.concatenate([self.small, np.zeros(len(binned) - len(self.small), np.int64)])
            self.small[:len(binned)] += binned
            return
        values, numbers = np.unique(classes, return_counts=True)
        for value, number in zip(values.tolist(), numbers.tolist()):
            if 0 <= value < len(self.small):
                self.small[value] += number
            else:
                self.other[value] = self.other.get(value, 0) + number

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        counts = dict(self.other)
        for value in np.flatnonzero(self.small).tolist():
            counts[value] = counts.get(value, 0) + int(self.small[value])
        values = np.array(sorted(counts), dtype=np.int64)
        return values, np.array([counts[v] for v in values.tolist()], dtype=np.int64)


def count_particles(path_or_loop, chunk_bytes: int = CHUNK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """(distinct class numbers, particles in each) of a data.star; memory independent of its size."""
    loop = path_or_loop if isinstance(path_or_loop, ParticleLoop) else find_particle_loop(path_or_loop)
    counts = _Counts()
    for chunk in scan_rows(loop, chunk_bytes=chunk_bytes):
        counts.add(chunk.classes)
    return counts.result()


def particle_classes(path_or_loop, expected: Optional[int] = None,
                     chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """rlnClassNumber of every particle, in file order, as int32 (4 bytes per particle)."""
    loop = path_or_loop if isinstance(path_or_loop, ParticleLoop) else find_particle_loop(path_or_loop)
    parts = [chunk.classes.astype(np.int32) for chunk in scan_rows(loop, chunk_bytes=chunk_bytes)]
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    if expected is not None and len(out) != expected:
        raise InputError(f"{len(out)} particles now, {expected} when it was read", loop.path,
                         "do not change the data.star while ClassRanker runs")
    return out


class _Output:
    """A subset file being written: every WRITEBACK_BYTES, the bytes so far are handed to the kernel
    for writing back (posix_fadvise DONTNEED starts writeback of dirty pages without waiting), so
    that the atomic writer's fsync at the end has little left to wait for."""

    WRITEBACK_BYTES = 32 << 20

    def __init__(self, handle):
        self.handle, self.written, self.flushed = handle, 0, 0

    def write(self, data) -> None:
        self.handle.write(data)
        self.written += len(data)
        if self.written - self.flushed >= self.WRITEBACK_BYTES and hasattr(os, "posix_fadvise"):
            self.handle.flush()
            os.posix_fadvise(self.handle.fileno(), self.flushed, self.written - self.flushed,
                             os.POSIX_FADV_DONTNEED)
            self.flushed = self.written


class RowCountMismatch(InputError):
    """The data.star does not have the rows the selection was made for."""


def write_subset(loop_or_path, targets: Sequence[tuple], expected_rows: Optional[int] = None,
                 chunk_bytes: int = CHUNK_BYTES) -> list:
    """Write the selected rows of a data.star, verbatim, to each ``(path, Selection)`` in one pass.

    Each output is the header (optics block and loop labels, as in the file), the selected rows in
    their order and the rest of the file after the particles loop; written through
    :func:`~.atomic.atomic_write` (nothing is left on error). ``expected_rows``: the number of
    particles the selections were made for (RowCountMismatch if the file has another number).
    """
    loop = loop_or_path if isinstance(loop_or_path, ParticleLoop) else find_particle_loop(loop_or_path)
    header = header_bytes(loop)
    end = ScanEnd()
    with ExitStack() as stack:
        handles = []
        for path, selection in targets:
            tmp = stack.enter_context(atomic_write(path))
            handle = stack.enter_context(open(tmp, "wb"))
            handle.write(header)
            handles.append((_Output(handle), selection))
        for chunk in scan_rows(loop, end, chunk_bytes=chunk_bytes):
            if expected_rows is not None and chunk.first_row + len(chunk.classes) > expected_rows:
                raise RowCountMismatch(f"more than the {expected_rows} particles it had when it was read",
                                       loop.path, "do not change the data.star while ClassRanker runs")
            for handle, selection in handles:
                handle.write(copy_rows(chunk, selection.mask(chunk.classes, chunk.first_row)))
        if expected_rows is not None and end.rows != expected_rows:
            raise RowCountMismatch(f"{end.rows} particles, {expected_rows} when it was read", loop.path,
                                   "do not change the data.star while ClassRanker runs")
        if end.trailer_start is not None:
            with open(loop.path, "rb") as source:
                for handle, _ in handles:
                    source.seek(end.trailer_start)
                    shutil.copyfileobj(source, handle.handle, 1 << 20)
    return [Path(path) for path, _ in targets]


# ----------------------------------------------------------------------------- the ParticleSet


def stream_particles(path: PathLike, load_table=None) -> tuple[ParticleSet, object]:
    """(light ParticleSet, optics table or None) of a data.star after one count pass.

    The ParticleSet writes subsets by streaming the file (``write_subset``), loads the class number
    of each particle on demand (one more pass) and the full table with ``load_table`` (starfile).
    """
    loop = find_particle_loop(path)
    optics = read_optics(loop)
    counts = count_particles(loop)
    total = int(counts[1].sum())

    def writer(out, selection: Selection, rejected_path=None):
        targets = [(out, selection)]
        if rejected_path is not None:
            targets.append((rejected_path, selection.inverted()))
        return write_subset(loop, targets, expected_rows=total)[0]

    particle_set = ParticleSet(source=str(path), counts=counts,
                               load_class_numbers=lambda: particle_classes(loop, expected=total),
                               write_subset=writer, load_table=load_table)
    return particle_set, optics


def stream_writer(path: PathLike, n_rows: int):
    """A ParticleSet write strategy that copies rows of ``path`` verbatim, for a table read from it
    (RowCountMismatch when the file's rows are not the table's)."""
    def writer(out, selection: Selection, rejected_path=None):
        targets = [(out, selection)]
        if rejected_path is not None:
            targets.append((rejected_path, selection.inverted()))
        return write_subset(path, targets, expected_rows=n_rows)[0]
    return writer

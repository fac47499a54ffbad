"""The header of a RELION data.star, read without its rows: where the particles loop is, its labels,
the optics block before it.

- :func:`find_particle_loop` reads the header lines up to the particles loop's labels (RELION 3.1+:
  ``data_optics`` then ``data_particles``; RELION 3.0: one unnamed ``data_`` table) into a
  :class:`ParticleLoop`; :mod:`.particle_rows` scans the rows from there.
- :func:`header_bytes` is the file up to the first row (copied verbatim into every subset);
  :func:`read_optics` reads the data_optics block alone with starfile.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from ..errors import InputError

PathLike = Union[str, os.PathLike]
CLASS_LABEL = "rlnClassNumber"


@dataclass(frozen=True)
class ParticleLoop:
    """Where the particles loop of a data.star is, from its header (no row read)."""

    path: Path
    block: str                     # 'particles', or '' for a RELION 3.0 unnamed table
    labels: tuple
    column: int                    # index of rlnClassNumber among the labels
    rows_start: int                # byte offset of the first line after the labels
    rows_line: int                 # its 1-based line number
    optics: Optional[tuple] = None  # (start, end) byte range of a data_optics loop block
    blocks: tuple = ()             # names of the blocks before it
    only_table: bool = False       # chosen as the file's only table (no data_particles)

    @property
    def n_columns(self) -> int:
        return len(self.labels)


@dataclass
class _Block:
    name: str
    start: int
    kind: Optional[str] = None     # 'loop' (reading labels), 'rows', 'simple'
    labels: list = field(default_factory=list)
    rows_start: Optional[int] = None
    rows_line: Optional[int] = None
    end: Optional[int] = None


def blocks_found(names) -> str:
    return ", ".join(f"data_{b}" for b in names) or "none"


def header_blocks(handle, start: int = 0, first_line: int = 1,
                   stop_at_target: bool = True) -> list:
    """Blocks from byte ``start`` (line ``first_line``) of ``handle``. With ``stop_at_target``, stops
    at the first row of the first loop that is not data_optics (its rows are not read)."""
    handle.seek(start)
    blocks, current, offset, number = [], None, start, first_line - 1
    for line in iter(handle.readline, b""):
        line_start, offset, number = offset, offset + len(line), number + 1
        text = line.strip()
        if text.startswith(b"data_"):
            if current is not None:
                current.end = line_start
                if current.kind == "loop":  # labels, then the next block: a loop without rows
                    current.kind, current.rows_start, current.rows_line = "rows", line_start, number
            current = _Block(text[5:].decode("utf-8", "replace"), line_start)
            blocks.append(current)
            continue
        if current is None or current.kind in ("rows", "simple"):
            continue
        if current.kind is None:
            if text.startswith(b"loop_"):
                current.kind = "loop"
            elif text.startswith(b"_"):
                current.kind = "simple"
            continue
        # reading the labels of a loop
        if text.startswith(b"_"):
            current.labels.append(text.split()[0][1:].decode("utf-8", "replace"))
            continue
        if not current.labels and (not text or text.startswith(b"#")):
            continue
        current.kind, current.rows_start, current.rows_line = "rows", line_start, number
        if stop_at_target and current.name != "optics":
            return blocks
    if current is not None:
        current.end = offset
        if current.kind == "loop":
            current.kind, current.rows_start, current.rows_line = "rows", offset, number + 1
    return blocks


def find_particle_loop(path: PathLike) -> ParticleLoop:
    """The particles loop of a RELION data.star: ``data_particles``, else the file's only table.

    InputError (naming the file) when the file is missing, has no such table or the table lacks
    rlnClassNumber. Reads only the header lines (and a data_optics block before the particles);
    a file whose first table is neither data_optics nor data_particles and that has more tables
    is read through to find them.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("STAR file not found", path, "check the path")
    with open(path, "rb") as handle:
        blocks = header_blocks(handle)
        tables = [b for b in blocks if b.kind == "rows"]
        target = next((b for b in tables if b.name == "particles"), None)
        only_table = False
        if target is None and len(tables) > 1:      # optics, then another table: read on
            candidate = tables[-1]
            blocks = blocks[:-1] + header_blocks(handle, candidate.start,
                                                  _line_of(handle, candidate.start),
                                                  stop_at_target=False)
            tables = [b for b in blocks if b.kind == "rows"]
            target = next((b for b in tables if b.name == "particles"), None)
        if target is None and len(tables) == 1:     # RELION 3.0 (or only data_optics): the table
            target, only_table = tables[0], True
    if target is None:
        if not blocks:
            raise InputError("no data block found", path, "give a non-empty STAR file")
        raise InputError(f"no data_particles table (blocks found: {blocks_found(b.name for b in blocks)})",
                         path, "give the RELION file of the right kind")
    if CLASS_LABEL not in target.labels:
        raise InputError(f"block data_{target.name} lacks the column(s) {CLASS_LABEL}", path,
                         "give the file written by the RELION job itself (not an edited copy)")
    optics = next((b for b in blocks if b.name == "optics" and b.kind == "rows" and b is not target), None)
    before = tuple(b.name for b in blocks[:blocks.index(target)])
    return ParticleLoop(path=path, block=target.name, labels=tuple(target.labels),
                        column=target.labels.index(CLASS_LABEL), rows_start=target.rows_start,
                        rows_line=target.rows_line,
                        optics=None if optics is None else (optics.start, optics.end),
                        blocks=before, only_table=only_table)


def _line_of(handle, offset: int) -> int:
    """1-based line number of byte ``offset`` (counts the newlines before it)."""
    handle.seek(0)
    count, left = 0, offset
    while left > 0:
        piece = handle.read(min(left, 1 << 22))
        if not piece:
            break
        count += piece.count(b"\n")
        left -= len(piece)
    return count + 1


def header_bytes(loop: ParticleLoop) -> bytes:
    """The file up to the first row of the particles loop (optics block and labels included)."""
    with open(loop.path, "rb") as handle:
        return handle.read(loop.rows_start)


def read_optics(loop: ParticleLoop):
    """The data_optics table before the particles (starfile on that block alone), or None."""
    if loop.optics is None:
        return None
    from .star import read_star
    start, end = loop.optics
    with open(loop.path, "rb") as handle:
        handle.seek(start)
        text = handle.read(end - start)
    with tempfile.TemporaryDirectory() as tmp:
        block = Path(tmp) / "optics.star"
        block.write_bytes(text)
        try:
            blocks = read_star(block)
        except InputError as error:
            raise InputError(f"cannot read its data_optics block ({error.message})", loop.path,
                             "give the data.star written by RELION") from error
    optics = blocks.get("optics")
    return optics if hasattr(optics, "columns") else None

"""STAR file access for the io package: starfile for reading, a vectorised loop writer for writing.

Reading goes through ``starfile`` and turns every failure into an :class:`InputError` naming the
file. Writing does not use ``starfile.write``: it formats every cell in Python (about 15 s per
million particles) and rounds floats to 6 decimals (``4.36341e-04`` -> ``0.000436``). Here loop
blocks are written with ``DataFrame.to_csv``, whose C formatter writes the shortest text that reads
back to the same float64, so values read from a RELION file are written back unchanged.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Mapping, Union

import numpy as np
import pandas as pd
import starfile

from ..errors import InputError
from .atomic import atomic_write

PathLike = Union[str, os.PathLike]
Block = Union[pd.DataFrame, Mapping[str, object]]


def read_star(path: PathLike, n_blocks: int = None) -> dict:
    """All (or the first ``n_blocks``) data blocks of a STAR file, by block name ('' if unnamed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("STAR file not found", path, "check the path")
    try:
        blocks = starfile.read(path, read_n_blocks=n_blocks, always_dict=True)
    except Exception as error:  # starfile raises assorted errors on malformed input
        raise InputError(f"cannot read this STAR file ({type(error).__name__}: {error})", path,
                         "give a STAR file written by RELION or starfile") from error
    if not blocks:
        _check_text(path)
        raise InputError("no data block found", path, "give a non-empty STAR file")
    return blocks


def _check_text(path: Path, limit: int = 1 << 20) -> None:
    """InputError when the first ``limit`` bytes of ``path`` are not UTF-8 text."""
    with path.open("rb") as handle:
        head = handle.read(limit)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not just a character cut by the limit
            raise InputError(f"not a text file: byte {error.start} is not UTF-8", path,
                             "give the STAR file as RELION wrote it (copy it again if it was damaged)") from None


def loop_block(blocks: dict, names: Iterable[str], path: PathLike) -> tuple[str, pd.DataFrame]:
    """The first block among ``names`` that is a table; InputError naming the blocks found otherwise."""
    names = list(names)
    for name in names:
        block = blocks.get(name)
        if isinstance(block, pd.DataFrame):
            return name, block
    found = ", ".join(f"data_{b}" for b in blocks) or "none"
    wanted = " or ".join(f"data_{n}" for n in names)
    raise InputError(f"no {wanted} table (blocks found: {found})", path,
                     "give the RELION file of the right kind")


def require_columns(table: pd.DataFrame, columns: Iterable[str], path: PathLike, block: str) -> None:
    """InputError naming the missing columns and the block when ``table`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"block data_{block} lacks the column(s) {', '.join(missing)}", path,
                         "give the file written by the RELION job itself (not an edited copy)")


def _quoted(column: pd.Series) -> pd.Series:
    """Strings with blanks (or empty) in double quotes, as STAR requires; other columns unchanged."""
    if column.dtype.kind in "biufc":
        return column
    text = column.astype(str)
    needs = text.str.contains(r"\s", regex=True) | (text == "")
    if not needs.any():
        return column
    # tabs separate the fields of the written file: inside a quoted value they become blanks
    return text.where(~needs, '"' + text.str.replace("\t", " ") + '"')


def _loop_lines(name: str, table: pd.DataFrame) -> str:
    header = [f"data_{name}", "", "loop_"]
    header += [f"_{column} #{i}" for i, column in enumerate(table.columns, 1)]
    body = pd.DataFrame({c: _quoted(table[c]) for c in table.columns})
    text = body.to_csv(sep="\t", header=False, index=False, na_rep="nan", quoting=csv.QUOTE_NONE,
                       lineterminator="\n") if len(body) else ""
    return "\n".join(header) + "\n" + text + "\n"


def _simple_lines(name: str, block: Mapping[str, object]) -> str:
    lines = [f"data_{name}", ""]
    for key, value in block.items():
        text = str(value)
        if isinstance(value, str) and (not value or any(ch.isspace() for ch in value)):
            text = f'"{value}"'
        lines.append(f"_{key} {text}")
    return "\n".join(lines) + "\n\n"


def star_text(blocks: Mapping[str, Block]) -> str:
    """STAR text of ``{block name: DataFrame (loop) or dict (key/value)}``, in the given order."""
    parts = ["# Written by ClassRanker\n\n"]
    for name, block in blocks.items():
        if isinstance(block, pd.DataFrame):
            parts.append(_loop_lines(name, block))
        elif isinstance(block, Mapping):
            parts.append(_simple_lines(name, block))
        else:
            raise TypeError(f"STAR block {name!r}: expected a DataFrame or a dict, got {type(block)}")
    return "".join(parts)


def write_star(path: PathLike, blocks: Mapping[str, Block]) -> Path:
    """Write ``blocks`` to ``path`` atomically; returns the path."""
    path = Path(path)
    text = star_text(blocks)
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return path


def as_int_array(values: pd.Series, path: PathLike, label: str) -> np.ndarray:
    """Whole-number column as int64; InputError if it holds text, NaN or fractions."""
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(numeric) | (numeric != np.round(numeric))
    if bad.any():
        first = values.iloc[int(np.flatnonzero(bad)[0])]
        raise InputError(f"{label} must hold whole numbers; found {first!r}", path,
                         f"repair the {label} column")
    return numeric.astype(np.int64)

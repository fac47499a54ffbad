"""The particles block of a RELION data.star, streamed: class numbers counted and rows subset in chunks.

Reading a data.star of 10^7 particles with starfile (pandas) takes minutes and memory that grows
with the count. Scoring needs only one column of it, rlnClassNumber, and the subset is the same
rows copied verbatim. This module is that one targeted scanner (everything else is read with
starfile, see :mod:`.star`):

- :func:`find_particle_loop` reads the header lines up to the particles loop's labels (RELION 3.1+:
  ``data_optics`` then ``data_particles``; RELION 3.0: one unnamed ``data_`` table).
- :func:`scan_rows` reads the rows in chunks of 2 MB (numpy, memory that does not grow with the
  number of particles) and yields the class number of each row. Rows are located by their line
  ends; rlnClassNumber is found by counting fields from the nearer end of the line within a small
  window, and every row is checked to hold as many fields as the header has labels (whole-chunk
  field count; a mismatch is reported with its line number). Lines with quotes, ``#`` comments,
  blank lines or unusual class text go through a per-line Python path that tokenises like
  starfile (quoted strings count as one field, ``'`` like ``"``).
- :func:`count_particles` is the count pass; :func:`write_subset` copies the header (optics kept)
  and the selected rows verbatim, in one pass, to one or two files through the atomic writer.
- :func:`stream_particles` builds the light :class:`~classranker_plugin.classset.ParticleSet`.

The output of :func:`write_subset` is byte for byte what the earlier whole-file copy wrote: the
file up to the end of the loop labels, the selected rows (blank and comment lines of the rows
dropped), then the rest of the file from the next ``data_`` block.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..classset import ParticleSet, Selection
from ..errors import InputError
from .atomic import atomic_write

PathLike = Union[str, os.PathLike]
CLASS_LABEL = "rlnClassNumber"
CHUNK_BYTES = 1 << 21          # 2 MiB per chunk: the numpy passes stay in cache (30% faster than 4 MiB)
_MAX_WINDOW = 512              # widest window (bytes) searched for the class field from a line end
_PAD = _MAX_WINDOW + 16
_WS_TABLE = bytes(32 if b <= 32 else b for b in range(256))  # the scanner's whitespace: bytes <= 32
#: one field as starfile (pandas, quotechar '"', ' read as ") reads it: a quoted string, or up to a '#'
_TOKEN = re.compile(rb'"[^"]*"|\'[^\']*\'|[^\s#]+|#')
_FIX_CORRUPT = ("the file is truncated or damaged: write it again with the job that made it (or "
                "restore it from a copy)")


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
class ScanEnd:
    """Filled in by :func:`scan_rows` when it ends."""

    rows: int = 0
    trailer_start: Optional[int] = None   # byte offset of the data_ block after the rows, if any
    trailer_blocks: list = field(default_factory=list)


# ----------------------------------------------------------------------------- the header


@dataclass
class _Block:
    name: str
    start: int
    kind: Optional[str] = None     # 'loop' (reading labels), 'rows', 'simple'
    labels: list = field(default_factory=list)
    rows_start: Optional[int] = None
    rows_line: Optional[int] = None
    end: Optional[int] = None


def _blocks_found(names) -> str:
    return ", ".join(f"data_{b}" for b in names) or "none"


def _header_blocks(handle, start: int = 0, first_line: int = 1,
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
        blocks = _header_blocks(handle)
        tables = [b for b in blocks if b.kind == "rows"]
        target = next((b for b in tables if b.name == "particles"), None)
        only_table = False
        if target is None and len(tables) > 1:      # optics, then another table: read on
            candidate = tables[-1]
            blocks = blocks[:-1] + _header_blocks(handle, candidate.start,
                                                  _line_of(handle, candidate.start),
                                                  stop_at_target=False)
            tables = [b for b in blocks if b.kind == "rows"]
            target = next((b for b in tables if b.name == "particles"), None)
        if target is None and len(tables) == 1:     # RELION 3.0 (or only data_optics): the table
            target, only_table = tables[0], True
    if target is None:
        if not blocks:
            raise InputError("no data block found", path, "give a non-empty STAR file")
        raise InputError(f"no data_particles table (blocks found: {_blocks_found(b.name for b in blocks)})",
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


# ----------------------------------------------------------------------------- the rows


class _Chunk:
    """Rows of one chunk: ``starts``/``ends`` (ends include the line's newline) index ``raw``."""

    __slots__ = ("raw", "starts", "ends", "classes", "first_row")

    def __init__(self, raw, starts, ends, classes, first_row):
        self.raw, self.starts, self.ends, self.classes, self.first_row = raw, starts, ends, classes, first_row


def _tokens(line: bytes) -> list:
    """Fields of one row as starfile reads them (quotes group, '#' starts a comment)."""
    out = []
    for token in _TOKEN.findall(line):
        if token == b"#":
            break
        out.append(token)
    return out


def _class_value(token: bytes, path: Path, line_number: int) -> int:
    text = token.strip(b"\"'")
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value != round(value):
        raise InputError(f"{CLASS_LABEL} must hold whole numbers; found {text.decode('utf-8', 'replace')!r} "
                         f"(line {line_number})", path, f"repair the {CLASS_LABEL} column")
    return int(value)


def _field_count_error(loop: ParticleLoop, line_number: int, found: int) -> InputError:
    return InputError(f"line {line_number} of data_{loop.block} has {found} field(s) but the loop "
                      f"has {loop.n_columns} labels", loop.path, _FIX_CORRUPT)


class _Anchor:
    """Where the class field is looked for: ``from_end`` fields counted from the line end (else from
    the start), within ``width`` bytes."""

    def __init__(self, from_end: bool, width: int):
        self.from_end, self.width = from_end, width

    @classmethod
    def choose(cls, loop: ParticleLoop, sample: Sequence[bytes]) -> "_Anchor":
        """The nearer end of the line to the class field, over the sample rows."""
        before, after = [], []
        k, n = loop.column, loop.n_columns
        for line in sample:
            spans = [m.span() for m in re.finditer(rb"\S+", line.rstrip(b"\r\n"))]
            if len(spans) == n:
                before.append(spans[k][1] + 1)
                after.append(len(line.rstrip(b"\r\n")) - spans[k][0] + 1)
        if not before:
            return cls(True, 128)
        if max(before) < max(after):
            return cls(False, int(min(_MAX_WINDOW, (max(before) + 16 + 63) // 64 * 64)))
        return cls(True, int(min(_MAX_WINDOW, (max(after) + 16 + 63) // 64 * 64)))


_ONE = np.uint64(1)
_M1, _M2, _M4 = (np.uint64(0x5555555555555555), np.uint64(0x3333333333333333),
                 np.uint64(0x0F0F0F0F0F0F0F0F))
_H01 = np.uint64(0x0101010101010101)
_ZEROS = np.uint64(0x3030303030303030)     # '0' in every byte
_LOW7, _HIGH = np.uint64(0x7F7F7F7F7F7F7F7F), np.uint64(0x8080808080808080)
_TEN_UP = np.uint64(0x7676767676767676)    # + (0x80 - 10): high bit set for bytes >= 10


def _popcount(v: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (SWAR; numpy 1.x has no bit_count)."""
    v = v - ((v >> _ONE) & _M1)
    v = (v & _M2) + ((v >> np.uint64(2)) & _M2)
    v = (v + (v >> np.uint64(4))) & _M4
    return ((v * _H01) >> np.uint64(56)).astype(np.int64)


def _low_bits(count: np.ndarray) -> np.ndarray:
    """uint64 with the lowest ``count`` (clipped to 0..64) bits set."""
    count = np.clip(count, 0, 64)
    shifted = _ONE << np.minimum(count, 63).astype(np.uint64)
    return np.where(count >= 64, ~np.uint64(0), shifted - _ONE)


def _rows_of(array: np.ndarray, width: int) -> np.ndarray:
    """Read-only view: row i is array[i:i + width] (sliding_window_view without its overhead)."""
    return as_strided(array, shape=(len(array) - width + 1, width),
                      strides=(array.strides[0], array.strides[0]), writeable=False)


def _words_at(raw: bytearray) -> np.ndarray:
    """uint64 (little-endian) starting at every byte offset of ``raw`` (unaligned reads)."""
    return np.ndarray(shape=(len(raw) - 7,), dtype="<u8", buffer=raw, offset=0, strides=(1,))


def _fast_classes(raw: bytearray, ws: np.ndarray, ls: np.ndarray, le: np.ndarray, loop: ParticleLoop,
                  anchor: _Anchor) -> tuple[np.ndarray, np.ndarray]:
    """(ok, class) per line: the class field found by counting fields from the anchored end of the
    line within ``anchor.width`` bytes and parsed as plain digits; ok False where that did not work
    (those lines take the slow path). ``ws``: bytes <= 32 of the whole of ``raw``.

    The window's whitespace flags are packed into 64-bit words (one bit a byte, ordered from the
    anchored end), so finding the n-th field start is a few integer operations per line.
    """
    n = len(ls)
    width = anchor.width
    words = width // 64
    length = le - ls
    windows = _rows_of(ws, width)
    if anchor.from_end:   # bytes [le - width, le); bit b of the words: byte le - 1 - b
        packed = np.packbits(windows[le - width], axis=1, bitorder="big").view(">u8").reshape(n, words)
        bits = np.ascontiguousarray(packed[:, ::-1], dtype=np.uint64)
        need = loop.n_columns - loop.column             # field starts counted from the right
        inside = length                                 # bits >= length: before the line
    else:                 # bytes [ls - 1, ls - 1 + width); bit b: byte ls - 1 + b
        bits = np.packbits(windows[ls - 1], axis=1, bitorder="little").view("<u8").reshape(n, words)
        bits = bits.astype(np.uint64)
        need = loop.column + 1
        inside = length + 1                             # bit 0: the newline before the line
    for w in range(words):                              # outside the line: whitespace
        bits[:, w] |= ~_low_bits(inside - 64 * w)
    if anchor.from_end:    # a start (in file order): not blank, and the byte before it blank
        neighbour = bits >> _ONE
        neighbour[:, :-1] |= bits[:, 1:] << np.uint64(63)
    else:
        neighbour = bits << _ONE
        neighbour[:, 1:] |= bits[:, :-1] >> np.uint64(63)
    starts = ~bits & neighbour
    if words == 1:        # clear the need - 1 lowest starts: the lowest left is the class field
        x = starts[:, 0]
        for _ in range(need - 1):
            x &= x - _ONE
        ok = x != 0
        rows = np.flatnonzero(ok)
        x, word = x[rows], 0
    else:
        before = np.cumsum(_popcount(starts), axis=1)
        word = (before < need).sum(axis=1)              # the word holding the need-th start
        ok = word < words
        rows = np.flatnonzero(ok)
        word = word[rows]
        rank = need - np.where(word > 0, before[rows, np.maximum(word - 1, 0)], 0)  # 1-based in word
        x = starts[rows, word]
        for t in range(int(rank.max(initial=1)) - 1):   # clear the lowest set bits before it
            x = np.where(t < rank - 1, x & (x - _ONE), x)
    lowest = x & (~x + _ONE)
    bit = np.frexp(lowest.astype(np.float64))[1] - 1 + 64 * word
    if anchor.from_end:
        position = le[rows] - 1 - bit
    else:
        position = ls[rows] - 1 + bit
    # the field's first 8 bytes as one little-endian word: digits, then a blank
    text = _words_at(raw)[position]
    digits = text ^ _ZEROS                              # '0'..'9' -> 0..9
    not_digit = (((digits & _LOW7) + _TEN_UP) | digits) & _HIGH   # high bit: byte >= 10
    first = not_digit & (~not_digit + _ONE)             # the lowest non-digit byte (0 if none)
    n_digits = (np.frexp(first.astype(np.float64))[1] - 8) // 8   # its index
    end_byte = (text >> (8 * np.maximum(n_digits, 0)).astype(np.uint64)) & np.uint64(0xFF)
    parsed = (first != 0) & (n_digits > 0) & (end_byte <= 32)
    number = np.zeros(len(rows), dtype=np.int64)
    for i in range(int(n_digits.max(initial=0))):
        value = ((digits >> np.uint64(8 * i)) & np.uint64(0xFF)).astype(np.int64)
        number = np.where(i < n_digits, number * 10 + value, number)
    classes = np.zeros(n, dtype=np.int64)
    classes[rows] = number
    ok[rows[~parsed]] = False
    return ok, classes


def scan_rows(loop: ParticleLoop, end: Optional[ScanEnd] = None,
              chunk_bytes: int = CHUNK_BYTES) -> Iterator[_Chunk]:
    """Chunks of rows of the particles loop, in file order, with the class number of each row.

    Fills ``end`` (rows seen, where the next block starts) when the rows are exhausted. InputError
    naming the file and the line for a row with the wrong number of fields (a truncated or damaged
    file, NUL padding included) or a class that is not a whole number, and naming the blocks when
    the file has several tables and none is data_particles.
    """
    end = end if end is not None else ScanEnd()
    path = loop.path
    capacity = max(int(chunk_bytes), 1 << 12)
    raw = bytearray(_PAD + capacity + _PAD)
    raw[:_PAD] = b"\n" * _PAD
    anchor = None
    rows, line_number, carry = 0, loop.rows_line, 0
    with open(path, "rb") as handle:
        handle.seek(loop.rows_start)
        file_offset = loop.rows_start                     # file offset of raw[_PAD]
        done = False
        while not done:
            n = handle.readinto(memoryview(raw)[_PAD + carry:_PAD + capacity])
            total = carry + n
            if total == 0:
                break
            if n == 0:                                    # last line without a newline
                raw[_PAD + total] = 10
                stop = _PAD + total + 1
                done = True
            else:
                last = raw.rfind(b"\n", _PAD, _PAD + total)
                if last < 0:                              # a line longer than the buffer
                    capacity *= 2
                    bigger = bytearray(_PAD + capacity + _PAD)
                    bigger[:_PAD + total] = raw[:_PAD + total]
                    raw, carry = bigger, total
                    continue
                stop = last + 1
            if stop > _PAD:
                if anchor is None:
                    sample = bytes(raw[_PAD:stop]).split(b"\n", 200)[:200]
                    anchor = _Anchor.choose(loop, sample)
                chunk, lines, block_start = _chunk_rows(raw, stop, loop, anchor, line_number, rows)
                if chunk is not None:
                    rows += len(chunk.classes)
                    yield chunk
                line_number += lines
                if block_start is not None:             # the next data_ block: rows end here
                    end.trailer_start = file_offset + block_start - _PAD
                    done = True
            if not done:
                tail = _PAD + total - stop
                raw[_PAD:_PAD + tail] = raw[stop:_PAD + total]
                file_offset += stop - _PAD
                carry = tail
    end.rows = rows
    if end.trailer_start is not None and loop.only_table:
        with open(path, "rb") as handle:
            trailer = _header_blocks(handle, end.trailer_start, stop_at_target=False)
        end.trailer_blocks = [b.name for b in trailer]
        if any(b.kind == "rows" for b in trailer):
            names = list(loop.blocks) + [loop.block] + end.trailer_blocks
            raise InputError(f"no data_particles table and more than one table (blocks found: "
                             f"{_blocks_found(names)})", path, "give the RELION file of the right kind")


def _newlines(a: np.ndarray, begin: int, stop: int) -> np.ndarray:
    """Sorted offsets of the newlines in a[begin:stop]: flags packed 64 to a word, then the set bits
    of the few non-zero words (cheaper than flatnonzero over every byte)."""
    flags = np.packbits(a[begin:stop] == 10, bitorder="little")
    flags = np.concatenate([flags, np.zeros(-len(flags) % 8, dtype=np.uint8)]).view("<u8")
    where = np.flatnonzero(flags)
    x = flags[where]
    base = where * 64 + begin
    parts = []
    while len(x):
        lowest = x & (~x + _ONE)
        parts.append(base + np.frexp(lowest.astype(np.float64))[1] - 1)
        x = x & (x - _ONE)
        more = x != 0
        x, base = x[more], base[more]
    if len(parts) == 1:
        return parts[0]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def _chunk_rows(raw: bytearray, stop: int, loop: ParticleLoop, anchor: _Anchor, line_number: int,
                first_row: int) -> tuple[Optional[_Chunk], int, Optional[int]]:
    """(rows, lines read, offset in ``raw`` of a data_ line ending the loop or None) of the complete
    lines in raw[_PAD:stop] (which ends with a newline). A data_ block starts only at column 0 here
    (RELION writes it so; an indented one fails the field count as a row and is reported).

    First every line is read on the fast path; if the chunk's field count then disagrees (quoted
    strings with blanks, comments, a damaged row), it is read again with the lines that hold a
    quote or a '#' tokenised in Python, and a row that still has the wrong number of fields is
    reported with its line number.
    """
    a = np.frombuffer(raw, dtype=np.uint8)
    newlines = _newlines(a, _PAD, stop)
    ls = np.empty(len(newlines), dtype=np.int64)
    ls[0] = _PAD
    ls[1:] = newlines[:-1] + 1
    block_start = None
    maybe = np.flatnonzero(a[ls] == 100)                # 'd'
    if len(maybe):
        is_block = (_rows_of(a, 5)[ls[maybe]] == np.frombuffer(b"data_", np.uint8)).all(axis=1)
        if is_block.any():
            first = int(maybe[np.argmax(is_block)])
            block_start = int(ls[first])
            stop, newlines, ls = block_start, newlines[:first], ls[:first]
    n_lines = len(newlines)
    if not n_lines:
        return None, 0, block_start
    le = newlines
    segment = a[_PAD:stop]
    ws_all = a[:stop + _PAD] <= 32                      # the windows reach at most _PAD beyond
    ws = ws_all[_PAD:stop]
    fields = int(np.count_nonzero(ws[:-1] > ws[1:])) + int(not ws[0])
    ok, classes = _fast_classes(raw, ws_all, ls, le, loop, anchor)
    del ws, ws_all
    matched = False
    for careful in (False, True):
        if careful:
            special = np.zeros(n_lines, dtype=bool)
            for char in (b'"', b"'", b"#"):
                if raw.find(char, _PAD, stop) >= 0:
                    hits = np.flatnonzero(segment == char[0]) + _PAD
                    special[np.searchsorted(newlines, hits)] = True
            if not special.any():
                break
            ok &= ~special
        is_row = ok.copy()
        row_class = np.where(ok, classes, 0)
        raw_fields = 0
        for i in np.flatnonzero(~ok).tolist():
            line = bytes(raw[ls[i]:le[i]])
            raw_fields += len(line.translate(_WS_TABLE).split())
            tokens = _tokens(line)
            if not tokens:
                continue                                  # blank line or comment
            if len(tokens) != loop.n_columns:
                if careful or (b"#" not in line and b'"' not in line and b"'" not in line):
                    raise _field_count_error(loop, line_number + i, len(tokens))
                raw_fields = -1                           # quotes may group fields: read again
                break
            is_row[i] = True
            row_class[i] = _class_value(tokens[loop.column], loop.path, line_number + i)
        # every fast row must hold exactly as many fields as there are labels: one count per chunk
        if fields == raw_fields + loop.n_columns * int(ok.sum()):
            matched = True
            break
    if not matched:
        for i in np.flatnonzero(ok).tolist():
            found = len(bytes(raw[ls[i]:le[i]]).translate(_WS_TABLE).split())
            if found != loop.n_columns:
                raise _field_count_error(loop, line_number + i, found)
        raise AssertionError("field count mismatch not found line by line")  # pragma: no cover
    rows = np.flatnonzero(is_row)
    if not len(rows):
        return None, n_lines, block_start
    return _Chunk(raw, ls[rows], le[rows] + 1, row_class[rows], first_row), n_lines, block_start


# ----------------------------------------------------------------------------- passes


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


def _runs(starts: np.ndarray, ends: np.ndarray) -> tuple[list, list]:
    """Merge adjacent [start, end) ranges: (run starts, run ends) as lists."""
    if not len(starts):
        return [], []
    breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    first = np.concatenate([[0], breaks])
    last = np.concatenate([breaks - 1, [len(starts) - 1]])
    return starts[first].tolist(), ends[last].tolist()


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
            handles.append((handle, selection))
        for chunk in scan_rows(loop, end, chunk_bytes=chunk_bytes):
            if expected_rows is not None and chunk.first_row + len(chunk.classes) > expected_rows:
                raise RowCountMismatch(f"more than the {expected_rows} particles it had when it was read",
                                       loop.path, "do not change the data.star while ClassRanker runs")
            view = memoryview(chunk.raw)
            for handle, selection in handles:
                keep = selection.mask(chunk.classes, chunk.first_row)
                starts, ends = _runs(chunk.starts[keep], chunk.ends[keep])
                handle.write(b"".join([view[s:e] for s, e in zip(starts, ends)]))
            del view
        if expected_rows is not None and end.rows != expected_rows:
            raise RowCountMismatch(f"{end.rows} particles, {expected_rows} when it was read", loop.path,
                                   "do not change the data.star while ClassRanker runs")
        if end.trailer_start is not None:
            with open(loop.path, "rb") as source:
                for handle, _ in handles:
                    source.seek(end.trailer_start)
                    shutil.copyfileobj(source, handle, 1 << 20)
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

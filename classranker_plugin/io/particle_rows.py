"""The rows of a data.star's particles loop, scanned in chunks: where each row is and its class number.

Rows are read in chunks of 2 MiB (memory that does not grow with the number of particles), each
chunk into its own buffer, and the chunks are tokenised on worker threads (the C inner loops of
``_rowscan.c`` and numpy both release the GIL, so on 2 cores two chunks are read at once) while the
caller gets them back in file order. Where ``_rowscan`` was not built (or CLASSRANKER_PURE_PYTHON is
set) the numpy scanner below does the same, about 2.4x slower.

In a chunk, rows are located by their line ends; rlnClassNumber is found by counting fields from
the nearer end of the line within a small window, and every row is checked to hold as many fields
as the header has labels (whole-chunk field count; a mismatch is reported with its line number).
Lines with quotes, ``#`` comments, blank lines or unusual class text go through a per-line Python
path that tokenises like starfile (quoted strings count as one field, ``'`` like ``"``).
"""
from __future__ import annotations

import os
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import InputError
from .particle_header import CLASS_LABEL, ParticleLoop, blocks_found, header_blocks

try:                                   # the compiled inner loops (setup.py builds them when it can)
    from . import _rowscan
except ImportError:                    # pragma: no cover (no compiler at install: numpy below)
    _rowscan = None
if os.environ.get("CLASSRANKER_PURE_PYTHON"):
    _rowscan = None

CHUNK_BYTES = 1 << 21          # 2 MiB per chunk: the numpy passes stay in cache (30% faster than 4 MiB)
MAX_THREADS = 4                # worker threads of a scan (one per core up to this)
_MAX_WINDOW = 512              # widest window (bytes) searched for the class field from a line end
_PAD = _MAX_WINDOW + 16
_WS_TABLE = bytes(32 if b <= 32 else b for b in range(256))  # the scanner's whitespace: bytes <= 32
#: one field as starfile (pandas, quotechar '"', ' read as ") reads it: a quoted string, or up to a '#'
_TOKEN = re.compile(rb'"[^"]*"|\'[^\']*\'|[^\s#]+|#')
_FIX_CORRUPT = ("the file is truncated or damaged: write it again with the job that made it (or "
                "restore it from a copy)")


@dataclass
class ScanEnd:
    """Filled in by :func:`scan_rows` when it ends."""

    rows: int = 0
    trailer_start: Optional[int] = None   # byte offset of the data_ block after the rows, if any
    trailer_blocks: list = field(default_factory=list)


class _Chunk:
    """Rows of one chunk: ``starts``/``ends`` (ends include the line's newline) index ``raw``."""

    __slots__ = ("raw", "starts", "ends", "classes", "first_row")

    def __init__(self, raw, starts, ends, classes, first_row: int = 0):
        self.raw, self.starts, self.ends, self.classes, self.first_row = raw, starts, ends, classes, first_row


def _tokens(line: bytes) -> list:
    """Fields of one row as starfile reads them (quotes group, '#' starts a comment)."""
    out = []
    for token in _TOKEN.findall(line):
        if token == b"#":
            break
        out.append(token)
    return out


def _class_value(token: bytes, path: Path, index: int) -> int:
    """The class number in ``token`` (a whole number, possibly written as a float); _LineError if not."""
    text = token.strip(b"\"'")
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
    if not np.isfinite(value) or value != round(value) or abs(value) >= 1 << 62:
        found = text.decode("utf-8", "replace")
        raise _LineError(index, lambda line: InputError(
            f"{CLASS_LABEL} must hold whole numbers (below 2^62); found {found!r} (line {line})", path,
            f"repair the {CLASS_LABEL} column"))
    return int(value)


class _LineError(Exception):
    """A bad row at line ``index`` of a chunk (0: its first line). :func:`scan_rows` knows where the
    chunk starts in the file and raises ``make(line number)``, an InputError."""

    def __init__(self, index: int, make):
        super().__init__(index)
        self.index, self.make = index, make


def _field_count_error(loop: ParticleLoop, index: int, found: int) -> _LineError:
    return _LineError(index, lambda line: InputError(
        f"line {line} of data_{loop.block} has {found} field(s) but the loop has {loop.n_columns} "
        f"labels", loop.path, _FIX_CORRUPT))


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


def _compiled_scan(raw: bytearray, stop: int, loop: ParticleLoop) -> tuple:
    """(newline offsets, fields per line, class per line, ok per line) of raw[_PAD:stop], by the C
    scanner: ok lines have as many fields as labels, no quote or '#', and a plain-digit class."""
    n = _rowscan.count_lines(raw, _PAD, stop)
    line_ends = np.empty(n, dtype=np.int64)
    fields = np.empty(n, dtype=np.int32)
    classes = np.empty(n, dtype=np.int64)
    ok = np.empty(n, dtype=bool)
    _rowscan.scan(raw, _PAD, stop, loop.column, loop.n_columns, line_ends, fields, classes, ok)
    return line_ends, fields, classes, ok


def copy_rows(chunk: "_Chunk", keep: np.ndarray):
    """The bytes of the chunk's rows where ``keep`` is True, verbatim and in order (bytes-like)."""
    keep = np.ascontiguousarray(keep, dtype=bool)
    if _rowscan is not None:
        out = bytearray(int(chunk.ends[-1] - chunk.starts[0]) if len(keep) else 0)
        written = _rowscan.copy_rows(chunk.raw, np.ascontiguousarray(chunk.starts),
                                     np.ascontiguousarray(chunk.ends), keep, out)
        return memoryview(out)[:written]
    starts, ends = _runs(chunk.starts[keep], chunk.ends[keep])
    view = memoryview(chunk.raw)
    return b"".join([view[s:e] for s, e in zip(starts, ends)])


def _runs(starts: np.ndarray, ends: np.ndarray) -> tuple[list, list]:
    """Merge adjacent [start, end) ranges: (run starts, run ends) as lists."""
    if not len(starts):
        return [], []
    breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    first = np.concatenate([[0], breaks])
    last = np.concatenate([breaks - 1, [len(starts) - 1]])
    return starts[first].tolist(), ends[last].tolist()


def _chunk_rows(raw: bytearray, stop: int, loop: ParticleLoop,
                anchor: Optional[_Anchor]) -> tuple[Optional[_Chunk], int, Optional[int]]:
    """(rows, lines read, offset in ``raw`` of a data_ line ending the loop or None) of the complete
    lines in raw[_PAD:stop] (which ends with a newline). A data_ block starts only at column 0 here
    (RELION writes it so; an indented one fails the field count as a row and is reported).

    First every line is read on the fast path; if the chunk's field count then disagrees (quoted
    strings with blanks, comments, a damaged row), it is read again with the lines that hold a
    quote or a '#' tokenised in Python, and a row that still has the wrong number of fields is
    reported with its line number.
    """
    a = np.frombuffer(raw, dtype=np.uint8)
    compiled = _compiled_scan(raw, stop, loop) if _rowscan is not None else None
    newlines = compiled[0] if compiled is not None else _newlines(a, _PAD, stop)
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
    if compiled is not None:
        _, line_fields, classes, ok = (part[:n_lines] for part in compiled)
        fields = int(line_fields.sum())
    else:
        ws_all = a[:stop + _PAD] <= 32                  # the windows reach at most _PAD beyond
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
                    raise _field_count_error(loop, i, len(tokens))
                raw_fields = -1                           # quotes may group fields: read again
                break
            is_row[i] = True
            row_class[i] = _class_value(tokens[loop.column], loop.path, i)
        # every fast row must hold exactly as many fields as there are labels: one count per chunk
        if fields == raw_fields + loop.n_columns * int(ok.sum()):
            matched = True
            break
    if not matched:
        for i in np.flatnonzero(ok).tolist():
            found = len(bytes(raw[ls[i]:le[i]]).translate(_WS_TABLE).split())
            if found != loop.n_columns:
                raise _field_count_error(loop, i, found)
        raise AssertionError("field count mismatch not found line by line")  # pragma: no cover
    rows = np.flatnonzero(is_row)
    if not len(rows):
        return None, n_lines, block_start
    return _Chunk(raw, ls[rows], le[rows] + 1, row_class[rows]), n_lines, block_start


def scan_threads() -> int:
    """Worker threads for a scan: the cores this process may use, at most MAX_THREADS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                              # pragma: no cover (not Linux)
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def _read_chunks(handle, start: int, capacity: int) -> Iterator[tuple[bytearray, int, int]]:
    """(raw, stop, offset) from byte ``start`` of ``handle``: raw[_PAD:stop] are the next complete
    lines (the last one given a newline if the file lacks it), in a fresh buffer each time; raw[:_PAD]
    is newlines and at least _PAD bytes follow ``stop``; ``offset``: the file offset of raw[_PAD]."""
    handle.seek(start)
    carry, offset = b"", start
    while True:
        raw = bytearray(_PAD + capacity + _PAD)
        raw[:_PAD] = b"\n" * _PAD
        raw[_PAD:_PAD + len(carry)] = carry
        n = handle.readinto(memoryview(raw)[_PAD + len(carry):_PAD + capacity])
        total = len(carry) + n
        if total == 0:
            return
        if n == 0:                                        # last line without a newline
            raw[_PAD + total] = 10
            yield raw, _PAD + total + 1, offset
            return
        last = raw.rfind(b"\n", _PAD, _PAD + total)
        if last < 0:                                      # a line longer than the buffer
            capacity *= 2
            carry = bytes(raw[_PAD:_PAD + total])
            continue
        yield raw, last + 1, offset
        carry = bytes(raw[last + 1:_PAD + total])
        offset += last + 1 - _PAD


def scan_rows(loop: ParticleLoop, end: Optional[ScanEnd] = None, chunk_bytes: int = CHUNK_BYTES,
              threads: Optional[int] = None) -> Iterator[_Chunk]:
    """Chunks of rows of the particles loop, in file order, with the class number of each row.

    Fills ``end`` (rows seen, where the next block starts) when the rows are exhausted. InputError
    naming the file and the line for a row with the wrong number of fields (a truncated or damaged
    file, NUL padding included) or a class that is not a whole number, and naming the blocks when
    the file has several tables and none is data_particles. ``threads``: worker threads
    (:func:`scan_threads` when None; 1 reads every chunk in the calling thread).
    """
    end = end if end is not None else ScanEnd()
    path = loop.path
    threads = scan_threads() if threads is None else max(1, int(threads))
    capacity = max(int(chunk_bytes), 1 << 12)
    rows, line_number = 0, loop.rows_line
    anchor = None
    pending: deque = deque()                             # (rows of a chunk or its future, its offset)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="classranker-scan") if threads > 1 else None
    try:
        with open(path, "rb") as handle:
            chunks = _read_chunks(handle, loop.rows_start, capacity)
            done = False
            while not done:
                piece = next(chunks, None)
                if piece is not None:
                    raw, stop, offset = piece
                    if anchor is None and _rowscan is None:    # only the numpy scanner uses it
                        sample = bytes(raw[_PAD:stop]).split(b"\n", 200)[:200]
                        anchor = _Anchor.choose(loop, sample)
                    work = (pool.submit(_chunk_rows, raw, stop, loop, anchor) if pool is not None
                            else _Ready(_chunk_rows, raw, stop, loop, anchor))
                    pending.append((work, offset))
                    if len(pending) <= threads:          # keep every worker busy
                        continue
                if not pending:
                    break
                work, offset = pending.popleft()
                try:
                    chunk, lines, block_start = work.result()
                except _LineError as error:
                    raise error.make(line_number + error.index) from None
                if chunk is not None:
                    chunk.first_row = rows
                    rows += len(chunk.classes)
                    yield chunk
                line_number += lines
                if block_start is not None:             # the next data_ block: rows end here
                    end.trailer_start = offset + block_start - _PAD
                    done = True
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    end.rows = rows
    if end.trailer_start is not None and loop.only_table:
        with open(path, "rb") as handle:
            trailer = header_blocks(handle, end.trailer_start, stop_at_target=False)
        end.trailer_blocks = [b.name for b in trailer]
        if any(b.kind == "rows" for b in trailer):
            names = list(loop.blocks) + [loop.block] + end.trailer_blocks
            raise InputError(f"no data_particles table and more than one table (blocks found: "
                             f"{blocks_found(names)})", path, "give the RELION file of the right kind")


class _Ready:
    """A chunk read in the calling thread, with a future's ``result()``: errors raised there."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def result(self):
        return self.function(*self.args)

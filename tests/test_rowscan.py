"""The compiled row scanner (io/_rowscan.c) against the numpy one it replaces where it was built."""
import numpy as np
import pytest

from classranker_plugin.io import particle_rows
from classranker_plugin.io.particles import find_particle_loop
from test_particle_stream import LABELS, OPTICS, labels_text, rows_text


def _chunk_result(text: bytes, loop, compiled):
    """(starts, ends, classes, lines, block start) or the line index of the error, of one chunk."""
    saved = particle_rows._rowscan
    if not compiled:
        particle_rows._rowscan = None
    try:
        raw = bytearray(b"\n" * particle_rows._PAD + text + b"\n" * particle_rows._PAD)
        stop = particle_rows._PAD + len(text)
        anchor = particle_rows._Anchor.choose(loop, text.split(b"\n")[:200])
        chunk, lines, block = particle_rows._chunk_rows(raw, stop, loop, anchor)
    except particle_rows._LineError as error:
        return ("error", error.index)
    finally:
        particle_rows._rowscan = saved
    if chunk is None:
        return (None, lines, block)
    return (chunk.starts.tolist(), chunk.ends.tolist(), chunk.classes.tolist(), lines, block)


@pytest.mark.skipif(particle_rows._rowscan is None,
                    reason="the C row scanner was not built when installing (no compiler?)")
def test_compiled_and_numpy_scanners_read_every_chunk_alike(tmp_path):
    """Random chunks with the awkward cases (quotes, comments, blank lines, CR, tabs, NUL padding,
    signed, float, long and missing class numbers, wrong field counts, a data_ block): the C scanner
    gives exactly what the numpy one gives, rows and errors alike."""
    lines, _ = rows_text(400, seed=21)
    path = tmp_path / "data.star"
    path.write_text(OPTICS + "data_particles\n\n" + labels_text(LABELS) + "".join(lines))
    loop = find_particle_loop(path)
    rng = np.random.default_rng(5)
    edits = [lambda f: f, lambda f: f, lambda f: f,
             lambda f: f[:7] + ["-3"] + f[8:], lambda f: f[:7] + ["4.000"] + f[8:],
             lambda f: f[:7] + ["1" * 20] + f[8:], lambda f: f[:7] + ["x7"] + f[8:],
             lambda f: f[:2] + ['"a b"'] + f[3:], lambda f: f + ["# note"], lambda f: f[:-1],
             lambda f: f + ["extra"], lambda f: [], lambda f: ["#", "comment"],
             lambda f: f[:3] + ["'q'"] + f[4:]]
    separators = [" ", " ", "  ", "\t", " \r"]
    for trial in range(120):
        picked = rng.choice(len(lines), 30)
        out = []
        for i in picked:
            fields = lines[i].split()
            if rng.random() < 0.3:
                fields = edits[rng.integers(len(edits))](fields)
            sep = separators[rng.integers(len(separators))]
            out.append(sep.join(fields) + ("\r\n" if rng.random() < 0.1 else "\n"))
        if trial % 10 == 0:
            out.insert(int(rng.integers(len(out))), "data_next\n")
        text = "".join(out).encode()
        if trial % 7 == 0:
            text += b"\0" * 40 + b"\n"
        assert _chunk_result(text, loop, True) == _chunk_result(text, loop, False), text[:400]

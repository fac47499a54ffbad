"""The streamed data.star reader and subset writer (io/particles.py) against starfile and the earlier
whole-file writer: RELION 3.0 / 3.1 layouts, comments, blank lines, quotes, CRLF, chunk edges,
bad files, and memory that does not grow with the number of particles. Every test runs twice: with
the compiled row scanner (io/_rowscan.c) and with the numpy one it falls back to."""
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import starfile

from classranker_plugin.classset import ParticleSet, Selection
from classranker_plugin.errors import InputError
from classranker_plugin.io import read_classes, write_particles
from classranker_plugin.io import particle_rows
from classranker_plugin.io.particles import (count_particles, find_particle_loop, particle_classes,
                                             write_subset)

LABELS = ["rlnCoordinateX", "rlnCoordinateY", "rlnImageName", "rlnMicrographName", "rlnDefocusU",
          "rlnAnglePsi", "rlnOriginXAngst", "rlnClassNumber", "rlnNormCorrection",
          "rlnLogLikeliContribution", "rlnMaxValueProbDistribution", "rlnNrOfSignificantSamples"]
OPTICS = ("# version 30001\n\ndata_optics\n\nloop_ \n_rlnOpticsGroupName #1 \n_rlnOpticsGroup #2 \n"
          "_rlnImagePixelSize #3 \nopticsGroup1 1 1.06 \n \n\n")


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def scanner(request, monkeypatch):
    """The row scanner under test: the C inner loops, or numpy (what runs where nothing compiled)."""
    if request.param == "numpy":
        monkeypatch.setattr(particle_rows, "_rowscan", None)
    elif particle_rows._rowscan is None:
        pytest.skip("the C row scanner was not built when installing (no compiler?); numpy is tested")
    return request.param


def rows_text(n, seed=0, n_classes=12, class_first=False):
    """``n`` rows with LABELS (or rlnClassNumber first) and their class numbers."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(1, n_classes + 1, n)
    lines = []
    for i, c in enumerate(classes.tolist()):
        fields = [f"{rng.uniform(0, 4096):12.6f}", f"{rng.uniform(0, 4096):12.6f}",
                  f"{i % 997 + 1:06d}@Extract/job007/Movies/mic_{i // 997:05d}.mrcs",
                  f"MotionCorr/job002/Movies/mic_{i // 997:05d}.mrc", f"{rng.uniform(8e3, 3e4):12.6f}",
                  f"{rng.uniform(-180, 180):12.6f}", f"{rng.normal(0, 2):12.6f}", f"{c:12d}",
                  f"{rng.normal(.55, .04):12.6f}", f"{rng.normal(14700, 60):12.6f}",
                  f"{rng.uniform(0, 1):12.6f}", f"{rng.integers(1, 40):12d}"]
        if class_first:
            fields.insert(0, fields.pop(7))
        lines.append(" " + " ".join(fields) + " \n")
    return lines, classes


def labels_text(labels):
    return "loop_ \n" + "".join(f"_{label} #{i} \n" for i, label in enumerate(labels, 1))


def relion31(path, n=300, seed=0, class_first=False, extra_rows=(), trailer=""):
    lines, classes = rows_text(n, seed, class_first=class_first)
    labels = [LABELS[7]] + LABELS[:7] + LABELS[8:] if class_first else LABELS
    for index, line in extra_rows:
        lines.insert(index, line)
    path.write_text(OPTICS + "# version 30001\n\ndata_particles\n\n" + labels_text(labels) + "".join(lines)
                    + " \n" + trailer)
    return path, classes


def relion30(path, n=300, seed=0):
    lines, classes = rows_text(n, seed)
    path.write_text("\ndata_\n\n" + labels_text(LABELS) + "".join(lines) + "\n")
    return path, classes


def old_copy_selected_rows(source, keep):
    """The earlier whole-file writer (io/writers.py before streaming), as the reference output."""
    lines = source.read_bytes().split(b"\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"data_")
                 and line.strip() in (b"data_particles", b"data_"))
    index = start + 1
    while not lines[index].startswith(b"_"):
        index += 1
    while index < len(lines) and lines[index].startswith(b"_"):
        index += 1
    first = index
    while index < len(lines) and not lines[index].startswith(b"data_"):
        index += 1
    rows = [i for i in range(first, index) if lines[i].strip() and not lines[i].lstrip().startswith(b"#")]
    assert len(rows) == len(keep)
    selected = [lines[i] for i in np.asarray(rows)[np.asarray(keep, bool)]]
    out = b"\n".join(lines[:first]) + b"\n"
    if selected:
        out += b"\n".join(selected) + b"\n"
    return out + b"\n".join(lines[index:])


def starfile_particles(path):
    blocks = starfile.read(path, always_dict=True)
    return blocks.get("particles", blocks.get(""))


def check_against_starfile(path, chunk_bytes=1 << 22, wanted=(1, 3, 4, 8), tmp=None):
    """Counts, class array and subset of the streamed reader equal starfile's and the old writer's."""
    table = starfile_particles(path)
    expected = table["rlnClassNumber"].to_numpy()
    values, counts = count_particles(path, chunk_bytes=chunk_bytes)
    np.testing.assert_array_equal(values, np.unique(expected))
    np.testing.assert_array_equal(counts, np.unique(expected, return_counts=True)[1])
    np.testing.assert_array_equal(particle_classes(path, chunk_bytes=chunk_bytes), expected)
    keep = np.isin(expected, wanted)
    out, rejected = tmp / "kept.star", tmp / "rejected.star"
    write_subset(path, [(out, Selection(classes=np.array(wanted))),
                        (rejected, Selection(classes=np.array(wanted), invert=True))],
                 expected_rows=len(expected), chunk_bytes=chunk_bytes)
    assert out.read_bytes() == old_copy_selected_rows(path, keep)
    assert rejected.read_bytes() == old_copy_selected_rows(path, ~keep)
    pd.testing.assert_frame_equal(starfile_particles(out).reset_index(drop=True),
                                  table[keep].reset_index(drop=True))


# ----------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("class_first", [False, True])
@pytest.mark.parametrize("chunk_bytes", [4096, 1 << 22])
def test_relion31_counts_and_subset_equal_starfile(tmp_path, class_first, chunk_bytes):
    path, _ = relion31(tmp_path / "run_it025_data.star", n=500, class_first=class_first)
    loop = find_particle_loop(path)
    assert loop.block == "particles" and loop.optics is not None and loop.n_columns == len(LABELS)
    check_against_starfile(path, chunk_bytes, tmp=tmp_path)


@pytest.mark.parametrize("chunk_bytes", [4096, 1 << 22])
def test_relion30_counts_and_subset_equal_starfile(tmp_path, chunk_bytes):
    path, _ = relion30(tmp_path / "run_it025_data.star", n=400)
    loop = find_particle_loop(path)
    assert loop.block == "" and loop.optics is None
    check_against_starfile(path, chunk_bytes, tmp=tmp_path)


def test_real_relion30_tutorial_file(tutorial_dir, tmp_path):
    check_against_starfile(tutorial_dir / "class2d_job006_K10_manualpick" / "run_it025_data.star",
                           wanted=(1, 5), tmp=tmp_path)


def test_starfile_written_file_with_trailing_block(tmp_path):
    """A file written by starfile (tabs, no alignment) with a key-value block after the particles."""
    rng = np.random.default_rng(4)
    particles = pd.DataFrame({"rlnImageName": [f"{i:06d}@p.mrcs" for i in range(1, 201)],
                              "rlnClassNumber": rng.integers(1, 9, 200),
                              "rlnDefocusU": rng.uniform(1e4, 2e4, 200)})
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.5]})
    path = tmp_path / "data.star"
    starfile.write({"optics": optics, "particles": particles}, path)
    with open(path, "a") as handle:
        handle.write("\ndata_general\n\n_rlnSomething 3\n")
    check_against_starfile(path, 4096, wanted=(2, 5), tmp=tmp_path)
    assert (tmp_path / "kept.star").read_text().endswith("data_general\n\n_rlnSomething 3\n")


def test_comments_blank_lines_crlf_and_no_final_newline(tmp_path):
    lines, _ = rows_text(300, seed=2)
    lines.insert(0, "\n")
    lines.insert(50, "# a comment line\n")
    lines.insert(120, "   \n")
    lines.insert(121, "\t# indented comment\n")
    text = OPTICS + "data_particles\n\n" + labels_text(LABELS) + "".join(lines)
    path = tmp_path / "data.star"
    path.write_text(text.rstrip("\n"))                       # no newline after the last row
    for chunk_bytes in (4096, 1 << 22):
        check_against_starfile(path, chunk_bytes, tmp=tmp_path)
    crlf = tmp_path / "crlf.star"
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    check_against_starfile(crlf, 4096, tmp=tmp_path)


def test_rows_with_quoted_strings(tmp_path):
    lines, classes = rows_text(200, seed=3)
    quoted = []
    for i, line in enumerate(lines):
        if i % 7 == 0:  # a micrograph name with blanks, quoted as STAR requires
            fields = line.split()
            fields[3] = f'"Movies/my mic {i}.mrc"' if i % 14 else f"'Movies/my mic {i}.mrc'"
            line = " " + " ".join(fields) + "\n"
        quoted.append(line)
    path = tmp_path / "data.star"
    path.write_text(OPTICS + "data_particles\n\n" + labels_text(LABELS) + "".join(quoted))
    for chunk_bytes in (4096, 1 << 22):
        check_against_starfile(path, chunk_bytes, tmp=tmp_path)
    np.testing.assert_array_equal(particle_classes(path), classes)


def test_line_longer_than_the_buffer(tmp_path):
    lines, classes = rows_text(60, seed=5)
    fields = lines[30].split()
    fields[3] = "Movies/" + "x" * 9000 + ".mrc"
    lines[30] = " ".join(fields) + "\n"
    path = tmp_path / "data.star"
    path.write_text(OPTICS + "data_particles\n\n" + labels_text(LABELS) + "".join(lines))
    np.testing.assert_array_equal(particle_classes(path, chunk_bytes=4096), classes)
    check_against_starfile(path, 4096, tmp=tmp_path)


def test_empty_particles_loop(tmp_path):
    path = tmp_path / "data.star"
    path.write_text(OPTICS + "data_particles\n\n" + labels_text(LABELS))
    values, counts = count_particles(path)
    assert len(values) == 0 and len(particle_classes(path)) == 0
    write_subset(path, [(tmp_path / "out.star", Selection(classes=np.array([1])))], expected_rows=0)
    assert (tmp_path / "out.star").read_text() == path.read_text()


# ----------------------------------------------------------------------------- bad files
def test_unknown_class_is_refused_naming_file_and_fix(tmp_path):
    from test_io import make_relion31_job

    job = make_relion31_job(tmp_path / "p", n_classes=4, particle_classes=[1, 2, 7, 2, 9])
    data = job / "run_it002_data.star"
    with pytest.raises(InputError) as info:
        read_classes(job / "run_it002_model.star")
    text = str(info.value)
    assert str(data) in text and "7, 9" in text and "Fix:" in text and "same job and iteration" in text


def test_truncated_file_is_refused_with_the_line(tmp_path):
    path, _ = relion31(tmp_path / "data.star", n=300)
    text = path.read_bytes()
    cut = text[:text.index(b"\n", len(text) // 2) + 40]      # ends inside a row
    truncated = tmp_path / "truncated.star"
    truncated.write_bytes(cut)
    for chunk_bytes in (4096, 1 << 22):
        with pytest.raises(InputError, match=r"line \d+ of data_particles has \d+ field\(s\) but the loop "
                                             r"has 12 labels.*Fix: the file is truncated"):
            count_particles(truncated, chunk_bytes=chunk_bytes)
    zeros = tmp_path / "zeros.star"                           # truncated, then padded with NUL bytes
    zeros.write_bytes(cut + b"\0" * 5000)
    with pytest.raises(InputError, match="truncated or damaged"):
        count_particles(zeros)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chunks_on_threads_keep_file_order_and_line_numbers(tmp_path, threads):
    """Small chunks on 1-3 worker threads: the same classes in file order, the same first_row of each
    chunk, and a damaged row far into the file reported at its own line."""
    from classranker_plugin.io.particles import scan_rows

    lines, _ = rows_text(2000, seed=12)
    header = OPTICS + "data_particles\n\n" + labels_text(LABELS)
    path = tmp_path / "data.star"
    path.write_text(header + "".join(lines))
    expected = starfile_particles(path)["rlnClassNumber"].to_numpy()
    loop = find_particle_loop(path)
    chunks = list(scan_rows(loop, chunk_bytes=4096, threads=threads))
    assert len(chunks) > 20
    np.testing.assert_array_equal(np.concatenate([c.classes for c in chunks]), expected)
    assert [c.first_row for c in chunks] == np.cumsum([0] + [len(c.classes) for c in chunks[:-1]]).tolist()
    damaged = lines[:1733] + [lines[1733].replace("@Extract", " @Extract")] + lines[1734:]
    path.write_text(header + "".join(damaged))
    with pytest.raises(InputError, match=f"line {header.count(chr(10)) + 1734} of data_particles has 13 field"):
        list(scan_rows(find_particle_loop(path), chunk_bytes=4096, threads=threads))


def test_damaged_rows_are_refused_with_the_line(tmp_path):
    lines, _ = rows_text(100, seed=6)
    header = OPTICS + "data_particles\n\n" + labels_text(LABELS)
    n_header = header.count("\n")
    merged = lines[:40] + [lines[40].rstrip("\n") + lines[41]] + lines[42:]   # a lost newline
    path = tmp_path / "merged.star"
    path.write_text(header + "".join(merged))
    with pytest.raises(InputError, match=f"line {n_header + 41} of data_particles has 24 field"):
        count_particles(path)
    lines[70] = lines[70].replace("@Extract", " @Extract")                    # a field split in two
    path.write_text(header + "".join(lines))
    with pytest.raises(InputError, match=f"line {n_header + 71} .* 13 field"):
        count_particles(path)
    bad_class = rows_text(50, seed=7)[0]
    fields = bad_class[10].split()
    fields[7] = "3.5"
    bad_class[10] = " ".join(fields) + "\n"
    path.write_text(header + "".join(bad_class))
    with pytest.raises(InputError, match="rlnClassNumber must hold whole numbers .below 2\^62.; found '3.5'"):
        count_particles(path)


def test_missing_blocks_and_columns(tmp_path):
    none = tmp_path / "none.star"
    none.write_text("# nothing here\n")
    with pytest.raises(InputError, match="no data block found"):
        find_particle_loop(none)
    no_class = tmp_path / "no_class.star"
    no_class.write_text(OPTICS + "data_particles\n\nloop_\n_rlnImageName #1\n1@a.mrcs\n")
    with pytest.raises(InputError, match="block data_particles lacks the column.*rlnClassNumber"):
        find_particle_loop(no_class)
    two = tmp_path / "two.star"
    two.write_text("data_a\nloop_\n_rlnClassNumber #1\n1\n\ndata_b\nloop_\n_rlnClassNumber #1\n2\n")
    with pytest.raises(InputError, match="blocks found: data_a, data_b"):
        count_particles(two)
    with pytest.raises(InputError, match="STAR file not found"):
        find_particle_loop(tmp_path / "missing.star")


def test_file_changed_since_it_was_read_writes_nothing(tmp_path):
    path, classes = relion31(tmp_path / "data.star", n=100)
    with pytest.raises(InputError, match="more than the 99 particles it had when it was read"):
        write_subset(path, [(tmp_path / "out.star", Selection(classes=np.array([1])))], expected_rows=99)
    assert not list(tmp_path.glob("*out*"))
    with pytest.raises(InputError, match="100 particles, 101 when it was read"):
        write_subset(path, [(tmp_path / "out.star", Selection(classes=np.array([1])))], expected_rows=101)
    assert not list(tmp_path.glob("*out*"))


# ----------------------------------------------------------------------------- ClassSet wiring
def test_read_classes_keeps_particles_light_and_loads_the_table_on_demand(tmp_path, monkeypatch):
    from test_io import make_relion31_job

    job = make_relion31_job(tmp_path / "p", n_classes=5, n_particles=400)
    data = job / "run_it002_data.star"
    loaded = []
    original = ParticleSet.table
    monkeypatch.setattr(ParticleSet, "table", lambda self: loaded.append(1) or original(self))
    classes = read_classes(job / "run_it002_model.star")
    table = starfile.read(data)["particles"]
    assert classes.has_particles and len(classes.particle_set) == len(table)
    np.testing.assert_array_equal(classes.stat("particle_count"),
                                  [(table["rlnClassNumber"] == c).sum() for c in classes.class_numbers])
    np.testing.assert_array_equal(classes.particle_set.class_numbers, table["rlnClassNumber"])
    out = write_particles(tmp_path / "particles.star", classes, [1, 3],
                          rejected_path=tmp_path / "rejected.star")
    assert not loaded                                         # no DataFrame of the particles so far
    kept = starfile.read(out)["particles"]
    pd.testing.assert_frame_equal(kept, table[table["rlnClassNumber"].isin([1, 3])].reset_index(drop=True))
    assert len(starfile.read(tmp_path / "rejected.star")["particles"]) == len(table) - len(kept)
    pd.testing.assert_frame_equal(classes.optics, starfile.read(data)["optics"])
    pd.testing.assert_frame_equal(classes.particles, table)    # the table, read when asked for
    assert loaded


def test_particle_set_from_class_numbers():
    numbers = np.array([3, 1, 3, 3, 2], dtype=np.int32)
    written = []
    particles = ParticleSet.from_classes(numbers, source="x.cs",
                                         write_subset=lambda path, selection, rejected=None:
                                         written.append(selection.mask(numbers)))
    np.testing.assert_array_equal(particles.counts_for([1, 2, 3, 4]), [1, 1, 3, 0])
    assert len(particles) == 5
    particles.write_subset("out", Selection(classes=np.array([3])))
    np.testing.assert_array_equal(written[0], [True, False, True, True, False])


# ----------------------------------------------------------------------------- memory
def test_count_pass_memory_does_not_grow_with_the_particles(tmp_path):
    """tracemalloc peak of the count pass: a few MB, the same for 2 x 10^4 and 2 x 10^5 rows."""
    peaks = {}
    for n in (20_000, 200_000):
        lines, _ = rows_text(1000, seed=8)
        path = tmp_path / f"data_{n}.star"
        with open(path, "w") as handle:
            handle.write(OPTICS + "data_particles\n\n" + labels_text(LABELS))
            block = "".join(lines)
            for _ in range(n // 1000):
                handle.write(block)
        tracemalloc.start()
        values, counts = count_particles(path, chunk_bytes=1 << 20)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert counts.sum() == n
    print("tracemalloc peaks", peaks)
    assert peaks[200_000] < 16 * 2**20, peaks          # a few 1 MiB chunks in flight on the threads
    assert peaks[200_000] < peaks[20_000] + 2**20, peaks


def test_rebalance_outputs_from_a_streamed_data_star(tmp_path):
    """Rebalance reads only the class column and copies the kept / excluded rows verbatim."""
    from test_io import make_relion31_job

    from classranker_plugin.cli.rebalance import write_outputs
    from classranker_plugin.rebalance import rebalance_classes

    job = make_relion31_job(tmp_path / "p", n_classes=5, n_particles=600)
    classes = read_classes(job / "run_it002_model.star")
    result = rebalance_classes(classes, 2, factor=0.0, max_size=100, seed=0)
    write_outputs(tmp_path / "out", classes, result)
    assert not classes.particle_set.table_loaded
    data = starfile.read(job / "run_it002_data.star")
    kept = starfile.read(tmp_path / "out" / "particles_retained.star")
    dropped = starfile.read(tmp_path / "out" / "particles_excluded.star")
    pd.testing.assert_frame_equal(kept["optics"], data["optics"])
    pd.testing.assert_frame_equal(kept["particles"], data["particles"][result.keep].reset_index(drop=True))
    pd.testing.assert_frame_equal(dropped["particles"], data["particles"][~result.keep].reset_index(drop=True))


@pytest.mark.parametrize("position", [0, 1, 4, 5, 7, 10, 11])
def test_class_column_anywhere_in_the_row(tmp_path, position):
    """The class field found from the nearer line end, within one or several 64-byte words."""
    lines, classes = rows_text(300, seed=9)
    order = [i for i in range(len(LABELS)) if i != 7]
    order.insert(position, 7)
    rows = []
    for line in lines:
        fields = line.split()
        rows.append(" ".join(fields[i] for i in order) + "\n")
    path = tmp_path / "data.star"
    path.write_text(OPTICS + "data_particles\n\n" + labels_text([LABELS[i] for i in order]) + "".join(rows))
    np.testing.assert_array_equal(particle_classes(path, chunk_bytes=4096), classes)
    check_against_starfile(path, 4096, tmp=tmp_path)


def test_long_and_signed_class_numbers_take_the_slow_path(tmp_path):
    lines, classes = rows_text(100, seed=10)
    for i, text in ((5, "12345678"), (6, "+3"), (7, "0003"), (8, "4.0")):
        fields = lines[i].split()
        fields[7] = text
        lines[i] = " ".join(fields) + "\n"
        classes[i] = int(float(text))
    path = tmp_path / "data.star"
    path.write_text(OPTICS + "data_particles\n\n" + labels_text(LABELS) + "".join(lines))
    np.testing.assert_array_equal(particle_classes(path), classes)
    fields = lines[9].split()
    fields[7] = "1" * 20                                  # beyond int64: refused, not overflowed
    lines[9] = " ".join(fields) + "\n"
    path.write_text(OPTICS + "data_particles\n\n" + labels_text(LABELS) + "".join(lines))
    with pytest.raises(InputError, match=r"whole numbers \(below 2\^62\); found '1{20}'") as error:
        particle_classes(path)
    assert str(path) in str(error.value)


def test_counts_of_unusual_class_numbers(tmp_path):
    """Class 0, negative and huge numbers are counted (and then refused by the class check)."""
    lines, classes = rows_text(200, seed=11)
    for i, value in ((3, 0), (4, -2), (5, 5_000_000), (6, 5_000_000), (150, -2)):
        fields = lines[i].split()
        fields[7] = str(value)
        lines[i] = " ".join(fields) + "\n"
        classes[i] = value
    path = tmp_path / "data.star"
    path.write_text(OPTICS + "data_particles\n\n" + labels_text(LABELS) + "".join(lines))
    for chunk_bytes in (4096, 1 << 21):
        values, counts = count_particles(path, chunk_bytes=chunk_bytes)
        expected_values, expected_counts = np.unique(classes, return_counts=True)
        np.testing.assert_array_equal(values, expected_values)
        np.testing.assert_array_equal(counts, expected_counts)


def test_selection_mask_equals_isin_for_any_class_numbers():
    """The lookup-table membership of Selection.mask against np.isin: small, negative and huge numbers."""
    rng = np.random.default_rng(3)
    for values, wanted in [(rng.integers(1, 50, 1000), [3, 7, 49, 60]),
                           (rng.integers(-5, 5, 1000), [-2, 0, 4]),
                           (rng.integers(0, 1 << 40, 100), [5, 1 << 39]),
                           (np.zeros(0, np.int64), [1]), (rng.integers(1, 9, 50), [])]:
        values, wanted = np.asarray(values, np.int64), np.asarray(wanted, np.int64)
        for invert in (False, True):
            expected = np.isin(values, wanted) ^ invert
            np.testing.assert_array_equal(Selection(classes=wanted, invert=invert).mask(values), expected)


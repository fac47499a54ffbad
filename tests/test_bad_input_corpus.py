"""The bad-input corpus: every way a user's input can be wrong, through the real command line.

Each case builds a broken input from the bundled example job and runs ``classranker score`` on it.
Every case must (1) exit with status 2, (2) print a message naming the file (or the option) at
fault and a ``Fix:``, and (3) leave nothing in the output folder that looks like a finished run.
A run killed by SIGTERM while writing is checked apart, in a real subprocess.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from classranker_plugin.checkpoint import BUNDLED_MODEL, read_checkpoint
from classranker_plugin.cli.main import main

EXAMPLE = Path(__file__).resolve().parent.parent / "classranker_plugin" / "example"
MODEL = "run_it025_model.star"
DATA = "run_it025_data.star"
STACK = "run_it025_classes.mrcs"
FINISHED = ("class_scores.star", "class_averages.star", "particles.star", "summary.json", "gallery.png")


class Case:
    """tmp folder with a copy of the example job in ``job`` and an output folder ``out``."""

    def __init__(self, root: Path):
        self.root = root
        self.job = root / "job"
        shutil.copytree(EXAMPLE, self.job)
        model = self.job / MODEL
        model.write_text(model.read_text().replace("classranker_plugin/example/", ""))
        self.out = root / "out"

    def model_star(self):
        return starfile.read(self.job / MODEL, always_dict=True)

    def write_model(self, blocks):
        starfile.write(blocks, self.job / MODEL, overwrite=True)

    def stack(self, name, images, mode=None):
        path = self.root / name
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(images if mode is None else images.astype(mode))
            mrc.voxel_size = 3.5
        return path

    def averages(self):
        with mrcfile.open(self.job / STACK) as mrc:
            return np.array(mrc.data, dtype=np.float32)

    def checkpoint(self, name, mutate):
        payload = read_checkpoint(BUNDLED_MODEL)
        mutate(payload)
        path = self.root / name
        torch.save(payload, path)
        return path


def args(case, *extra, input_=None):
    return ["score", str(input_ or case.job / MODEL), "--o", str(case.out), "--device", "cpu", *extra]


# --------------------------------------------------------------------------- the cases
# each returns (argv, the name the message must contain)
def missing_input(c):
    return args(c, input_=c.root / "nothing" / MODEL), MODEL


def truncated_mrc(c):
    path = c.job / STACK
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return args(c), STACK


def complex_mrc(c):
    stack = c.stack("complex.mrcs", c.averages(), mode=np.complex64)
    return args(c, input_=stack), "complex.mrcs"


def images_and_rows_disagree(c):
    stats = c.root / "stats.csv"
    stats.write_text("class_number,class_distribution\n" + "".join(f"{i},0.02\n" for i in range(1, 40)))
    return args(c, "--stats", str(stats), input_=c.job / STACK), "stats.csv"


def reference_beyond_stack(c):
    blocks = c.model_star()
    classes = blocks["model_classes"]
    classes.loc[len(classes) - 1, "rlnReferenceImage"] = f"000041@{STACK}"
    c.write_model(blocks)
    return args(c), MODEL


def nan_average(c):
    images = c.averages()
    images[3, 10, 10] = np.nan
    return args(c, input_=c.stack("nan.mrcs", images)), "nan.mrcs"


def all_zero_averages(c):
    return args(c, input_=c.stack("zeros.mrcs", np.zeros((20, 64, 64), np.float32))), "zeros.mrcs"


def box_16(c):
    return args(c, input_=c.stack("box16.mrcs", np.random.default_rng(0).normal(size=(5, 16, 16)).astype(np.float32))), "box16.mrcs"


def box_1024(c):
    return args(c, input_=c.stack("box1024.mrcs", np.random.default_rng(0).normal(size=(2, 1024, 1024)).astype(np.float32))), "box1024.mrcs"


def duplicated_class_numbers(c):
    stats = c.root / "dup.csv"
    stats.write_text("class_number\n" + "".join(f"{max(i, 2)}\n" for i in range(1, 41)))
    return args(c, "--stats", str(stats), input_=c.job / STACK), "dup.csv"


def missing_class_number(c):
    stats = c.root / "gap.csv"
    stats.write_text("class_number,class_distribution\n" + "".join(
        f"{'' if i == 7 else i},0.025\n" for i in range(1, 41)))
    return args(c, "--stats", str(stats), input_=c.job / STACK), "gap.csv"


def particles_in_unknown_classes(c):
    blocks = starfile.read(c.job / DATA, always_dict=True)
    blocks["particles"].loc[:4, "rlnClassNumber"] = 57
    starfile.write(blocks, c.job / DATA, overwrite=True)
    return args(c), DATA


def star_without_data_block(c):
    (c.job / MODEL).write_text("# RELION model file, emptied by a script\n\n")
    return args(c), MODEL


def star_with_non_utf8_bytes(c):
    path = c.job / MODEL
    path.write_bytes(path.read_bytes().replace(b"data_model_classes", b"data_model_cl\xff\xfesses"))
    return args(c), MODEL


def stats_with_non_utf8_bytes(c):
    stats = c.root / "latin1.csv"
    stats.write_bytes(b"class_number,r\xe9solution\n" + b"".join(b"%d,10\n" % i for i in range(1, 41)))
    return args(c, "--stats", str(stats), input_=c.job / STACK), "latin1.csv"


def star_without_reference_column(c):
    blocks = c.model_star()
    blocks["model_classes"] = blocks["model_classes"].drop(columns=["rlnReferenceImage"])
    c.write_model(blocks)
    return args(c), MODEL


def data_star_without_class_column(c):
    blocks = starfile.read(c.job / DATA, always_dict=True)
    blocks["particles"] = blocks["particles"].drop(columns=["rlnClassNumber"])
    starfile.write(blocks, c.job / DATA, overwrite=True)
    return args(c), DATA


def corrupt_data_star(c):
    (c.job / DATA).write_bytes(os.urandom(3000))
    return args(c), DATA


def box_differs_from_model_star(c):
    blocks = c.model_star()
    blocks["model_general"]["rlnOriginalImageSize"] = 128
    c.write_model(blocks)
    return args(c), MODEL


def output_is_a_file(c):
    c.out.write_text("my notes")
    return args(c), "out"


def output_read_only(c):
    if os.geteuid() == 0:  # root writes anywhere except on read-only file systems such as sysfs
        c.out = Path("/sys/classranker-test-output")
    else:
        locked = c.root / "locked"
        locked.mkdir(mode=0o500)
        c.out = locked / "out"
    return args(c), c.out.name


def truncated_checkpoint(c):
    path = c.root / "truncated.pt"
    path.write_bytes(BUNDLED_MODEL.read_bytes()[:5000])
    return args(c, "--model", str(path)), "truncated.pt"


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ.get('CLASSRANKER_EXPLOIT_MARK', '/tmp/exploit'))}",))


def checkpoint_that_pickles_code(c):
    os.environ["CLASSRANKER_EXPLOIT_MARK"] = str(c.root / "code_ran")
    return args(c, "--model", str(c.checkpoint("pickled.pt", lambda p: p.update(extra=_Exploit())))), "pickled.pt"


def torchscript_without_trust(c):
    path = c.root / "relion4.pt"
    torch.jit.script(torch.nn.Linear(4, 1)).save(str(path))
    return args(c, "--model", str(path)), "relion4.pt"


def feature_list_differs(c):
    def rename(payload):
        payload["feature_names"] = list(payload["feature_names"])
        payload["feature_names"][0] = "a_feature_of_another_version"
    return args(c, "--model", str(c.checkpoint("other_features.pt", rename))), "other_features.pt"


def cutoff_minus_one(c):
    return args(c, "--cutoff", "-1"), "--cutoff"


def cutoff_two(c):
    return args(c, "--cutoff", "2"), "--cutoff"


def cutoff_nan(c):
    return args(c, "--cutoff", "nan"), "--cutoff"


def min_classes_above_k(c):
    return args(c, "--min-classes", "41"), "--min-classes"


def negative_pixel_size(c):
    return args(c, "--apix", "-3.5"), MODEL


def pickled_cryosparc_cs(c):
    job = c.root / "J7"
    job.mkdir()
    shutil.copy(c.job / STACK, job / "J7_010_class_averages.mrc")
    rows = np.zeros(40, dtype=[("blob/path", "O"), ("blob/idx", "<u4")])
    rows["blob/path"] = "J7/J7_010_class_averages.mrc"
    with open(job / "J7_010_class_averages.cs", "wb") as handle:
        np.save(handle, rows, allow_pickle=True)
    return args(c, input_=job), "J7_010_class_averages.cs"


CASES = [missing_input, truncated_mrc, complex_mrc, images_and_rows_disagree, reference_beyond_stack,
         nan_average, all_zero_averages, box_16, box_1024, duplicated_class_numbers, missing_class_number,
         particles_in_unknown_classes, star_without_data_block, star_with_non_utf8_bytes,
         stats_with_non_utf8_bytes, star_without_reference_column, data_star_without_class_column,
         corrupt_data_star, box_differs_from_model_star, output_is_a_file, output_read_only,
         truncated_checkpoint, checkpoint_that_pickles_code, torchscript_without_trust, feature_list_differs,
         cutoff_minus_one, cutoff_two, cutoff_nan, min_classes_above_k, negative_pixel_size,
         pickled_cryosparc_cs]


def looks_finished(out: Path) -> list:
    """What in ``out`` could pass for a finished (or half-written) run."""
    if not out.is_dir():
        return []
    return [p.name for p in out.iterdir() if p.name in FINISHED or p.name.startswith(".partial")]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("make", CASES, ids=[f.__name__ for f in CASES])
def test_bad_input_is_refused_with_file_and_fix(make, tmp_path, capsys):
    case = Case(tmp_path)
    argv, name = make(case)
    before = case.out.read_text() if case.out.is_file() else None
    status = main(argv)
    message = capsys.readouterr().err
    assert status == 2, message
    assert name in message, message
    assert "Fix:" in message, message
    assert "Traceback" not in message
    assert looks_finished(case.out) == []
    if before is not None:
        assert case.out.read_text() == before  # a file given as --o is left as it was
    assert not (tmp_path / "code_ran").exists()  # nothing in a checkpoint was executed


def test_at_least_25_cases():
    assert len(CASES) >= 25


def _terminate_while_writing(case) -> tuple:
    """Run score, send SIGTERM as soon as its hidden .partial folder exists; (returncode, stderr), or
    None when the run finished before the signal could be sent (too fast to catch this time)."""
    command = [sys.executable, "-m", "classranker_plugin.cli.main", *args(case, "--saliency")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if case.out.is_dir() and any(p.name.startswith(".partial") for p in case.out.iterdir()):
            break
        time.sleep(0.002)
    if process.poll() is not None:
        process.communicate()
        return None
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    if process.returncode == 0:  # the signal came after the last file was in place
        return None
    return process.returncode, err


def test_sigterm_while_writing_leaves_nothing(tmp_path):
    """SIGTERM as soon as the outputs are being written (the hidden .partial folder exists): the
    process exits 143 and the output folder holds nothing, partial or final. A run that finishes
    before the signal lands says nothing and is tried again (up to 4 times)."""
    for attempt in range(4):
        case = Case(tmp_path / f"try{attempt}")
        outcome = _terminate_while_writing(case)
        if outcome is not None:
            break
    assert outcome is not None, "every run finished before SIGTERM could be sent"
    status, err = outcome
    assert status == 143, err
    assert "interrupted" in err
    assert not case.out.exists() or list(case.out.iterdir()) == []

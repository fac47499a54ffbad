"""Time to score 300 classes of box 256 on the CPU, step by step, beside the raw read of the same
stack, and to write the particle subset of 10^6 particles. Prints figures; asserts nothing.

    python benchmarks/score_speed.py [--classes 300] [--box 256] [--repeats 7] [--threads 2]
                                     [--particles 1000000]   (--particles 0: no subset part)

Every step is run --repeats times on the same job; the medians are printed (and the fastest).
The figures depend on what else runs on the machine: the load average is printed before and
after, and the run is marked "busy" when it was above 0.5 per core. On a busy machine torch's
OpenMP threads lose most of their time spinning at barriers: compare with OMP_WAIT_POLICY=PASSIVE
in the environment, or --threads 1.
"""
import argparse
import ctypes
import os
import statistics
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import torch

from classranker_plugin.checkpoint import load_model
from classranker_plugin.features import compute_features
from classranker_plugin.features.image import FFT_WORKERS
from classranker_plugin.io import read_classes
from classranker_plugin.io.writers import write_particles
from classranker_plugin.preprocess import model_images_and_frame
from classranker_plugin.scoring import score_classes, select_classes
from classranker_plugin.simulation import simulate_job


def blas_threads() -> str:
    """Threads of numpy's OpenBLAS (looked up in the loaded library), or what is known of them."""
    try:
        from threadpoolctl import threadpool_info
        counts = {info["internal_api"]: info["num_threads"] for info in threadpool_info()}
        return ", ".join(f"{api} {n}" for api, n in counts.items())
    except ImportError:
        pass
    try:
        with open("/proc/self/maps") as maps:
            libraries = {line.split()[-1] for line in maps if "openblas" in line.lower()}
        for library in libraries:
            handle = ctypes.CDLL(library)
            for symbol in ("openblas_get_num_threads64_", "openblas_get_num_threads"):
                if hasattr(handle, symbol):
                    return f"OpenBLAS {getattr(handle, symbol)()}"
    except OSError:
        pass
    return f"unknown (OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')})"


def load_line() -> tuple:
    one, five, _ = os.getloadavg()
    return one, f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def raw_read(path: Path) -> np.ndarray:
    """The stack as bytes can give it: memory-mapped and copied into a float32 array."""
    with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
        return np.array(mrc.data, dtype=np.float32)


STEPS = ("raw", "read", "windows", "features", "inference", "total", "score_classes")


def time_steps(model_star: Path, stack_path: Path, ranker, repeats: int) -> dict:
    """Wall-clock and CPU seconds (all threads of this process) of every step, one list per step."""
    wall = {name: [] for name in STEPS}
    cpu = {name: [] for name in STEPS}
    for _ in range(repeats):
        marks = [(time.perf_counter(), time.process_time())]
        raw = raw_read(stack_path)
        marks.append((time.perf_counter(), time.process_time()))
        classes = read_classes(model_star, with_particles=False)
        marks.append((time.perf_counter(), time.process_time()))
        images, frame = model_images_and_frame(classes, size=ranker.image_size)
        marks.append((time.perf_counter(), time.process_time()))
        features = compute_features(classes, ranker.feature_set, frame=frame)
        marks.append((time.perf_counter(), time.process_time()))
        scores = ranker.score(images, features.values)
        marks.append((time.perf_counter(), time.process_time()))
        result = score_classes(classes, ranker, device="cpu")
        marks.append((time.perf_counter(), time.process_time()))
        spans = [(a, b) for a, b in zip(marks[:-1], marks[1:])]
        spans = spans[:5] + [(marks[1], marks[5]), spans[5]]          # total: read_classes .. inference
        for name, (start, end) in zip(STEPS, spans):
            wall[name].append(end[0] - start[0])
            cpu[name].append(end[1] - start[1])
        del raw
    return {"wall": wall, "cpu": cpu, "scores": scores, "result": result}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=300)
    parser.add_argument("--box", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--particles", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (torch.set_num_threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        job = simulate_job(Path(tmp) / "job", n_classes=args.classes, box=args.box, pixel_size=1.2,
                           n_particles=max(args.particles, args.classes), seed=1)
        print(f"simulated {args.classes} classes of box {args.box} + {args.particles} particles "
              f"in {time.perf_counter() - t0:.1f} s (setup, not scoring)")
        model_star = next(Path(job).glob("*_model.star"))
        stack_path = next(Path(job).glob("*_classes.mrcs"))

        t0 = time.perf_counter()
        ranker = load_model(device="cpu")
        load_s = time.perf_counter() - t0
        cold = time_steps(model_star, stack_path, ranker, 1)          # first run: operators, oneDNN set-up
        load_before, before = load_line()
        steps = time_steps(model_star, stack_path, ranker, args.repeats)
        load_after, after = load_line()
        busy = max(load_before, load_after) > 0.5 * (os.cpu_count() or 1)

        size_mb = args.classes * args.box * args.box * 4 / 1e6
        print(f"scoring {args.classes} classes of box {args.box} on the CPU, median of {args.repeats} runs "
              f"(fastest in brackets); threads: torch {torch.get_num_threads()}, FFT {FFT_WORKERS}, "
              f"BLAS {blas_threads()}; {os.cpu_count()} CPUs; "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
        print(f"  {before} before, {after} after" + ("  -> BUSY: wall times are pessimistic" if busy else ""))
        labels = {
            "raw": ("raw stack read", f"mrcfile mmap + copy, {size_mb:.0f} MB float32: a floor for reading"),
            "read": ("read_classes", "model.star + classes.mrcs, validated"),
            "windows": ("model images", "64 px images + the feature frame, one pass"),
            "features": ("features", "feature vectors from the frame"),
            "inference": ("inference", "CNN + MLP"),
            "total": ("total", "read_classes + model images + features + inference"),
            "score_classes": ("score_classes", "images, features, inference and explanations"),
        }
        print(f"  {'':16s} {'wall s':>7s}  {'fastest':>7s}  {'CPU s':>6s}")
        print(f"  {'load model':16s} {load_s:7.3f}  {'':7s}  {'':6s}  (once)")
        for name, (label, what) in labels.items():
            wall, cpu = steps["wall"][name], steps["cpu"][name]
            print(f"  {label:16s} {statistics.median(wall):7.3f}  [{min(wall):.3f}]  {statistics.median(cpu):6.3f}  ({what})")
        print(f"  {'first run, cold':16s} {cold['wall']['total'][0]:7.3f}  {'':7s}  {cold['cpu']['total'][0]:6.3f}  "
              f"(total, as in a fresh process: window operators, oneDNN kernels)")
        print(f"  score_classes timings of the last run: "
              + ", ".join(f"{k} {v:.3f} s" for k, v in steps["result"].timings.items()))
        print("  (CPU s: the process's CPU time over all its threads, less sensitive to other jobs)")
        if args.particles <= 0:
            return
        scores = steps["scores"]

        t0 = time.perf_counter()
        with_particles = read_classes(model_star)
        t_data = time.perf_counter()
        keep = select_classes(scores, with_particles.stat("particle_count"), cutoff=0.5)
        out = Path(tmp) / "particles.star"
        write_particles(out, with_particles, with_particles.class_numbers[keep])
        t_write = time.perf_counter()
        size = out.stat().st_size / 1e6
        print(f"particle subset of {len(with_particles.particle_set)} particles "
              f"({int(np.nansum(with_particles.stat('particle_count')[keep]))} kept):")
        print(f"  read data.star {t_data - t0:7.2f} s")
        print(f"  select+write   {t_write - t_data:7.2f} s  ({size:.0f} MB written, "
              f"{size / max(t_write - t_data, 1e-9):.0f} MB/s)")
        t0 = time.perf_counter()
        Path(tmp, "copy.star").write_bytes(out.read_bytes())
        print(f"  raw copy of the same file {time.perf_counter() - t0:7.2f} s (I/O bound reference)")


if __name__ == "__main__":
    main()

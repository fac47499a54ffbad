"""Particle subset of a RELION data.star at 10^6 and 10^7 particles: the streamed reader and writer
(classranker_plugin/io/particles.py) beside the raw read of the file and starfile's read.

Generates RELION 3.1 Class2D data.star files (optics block + 25 particle columns, about 230 bytes a
row; streamed, a few seconds per 10^6 rows) in --folder (default: scratch/particle_bench, removed
afterwards unless --keep), then for each prints:
  cat            `cat file > /dev/null` (best of 3): the I/O limit, from a warm page cache (a memory
                 copy) and cold (the file's pages dropped first with posix_fadvise DONTNEED: a read
                 from the disk, or from the host's cache on a virtual machine)
  head -c half   `head -c <half the file> > out && sync out`, cold: the I/O that a subset keeping
                 half the rows cannot avoid (read it all, write and fsync half), against cold cat
  python read    the file read in 16 MB chunks into one buffer (what any Python reader pays)
  starfile.read  the whole table with starfile/pandas (what the reader did before)
  count pass     find_particle_loop + count_particles: per-class particle counts
  class array    particle_classes: rlnClassNumber of every particle as int32
  subset         write_subset of half the classes (rows copied verbatim; optics block kept)
  numpy scanner  count and subset with CLASSRANKER_PURE_PYTHON=1: the scanner that runs where the C
                 inner loops (classranker_plugin/io/_rowscan.c) were not built
The read, count and subset steps run warm and cold; "x cat" compares each with cat in the same state.
Each step but cat runs in its own child process: time of the step itself (after imports; wall and
CPU time, the latter less sensitive to a busy machine) and the child's peak RSS (getrusage RUSAGE_SELF ru_maxrss), shown also above the baseline of a child that
only imports the same modules; for our steps also the tracemalloc peak (Python + numpy buffers),
from a second run (tracemalloc slows every allocation, so it is not on while timing).
starfile at the largest size is skipped when 10x its peak at the smaller size would not fit in half
of the available memory (the figure is then extrapolated, and said so). Asserts nothing.

    python benchmarks/particle_subset.py [--particles 1000000 10000000] [--folder DIR] [--keep]
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnImageName",
           "rlnMicrographName", "rlnOpticsGroup", "rlnCtfMaxResolution", "rlnCtfFigureOfMerit",
           "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnCtfBfactor", "rlnCtfScalefactor",
           "rlnPhaseShift", "rlnGroupNumber", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
           "rlnOriginXAngst", "rlnOriginYAngst", "rlnClassNumber", "rlnNormCorrection",
           "rlnLogLikeliContribution", "rlnMaxValueProbDistribution", "rlnNrOfSignificantSamples"]
N_CLASSES = 200
HEADER = ("\n# version 30001\n\ndata_optics\n\nloop_ \n_rlnOpticsGroupName #1 \n_rlnOpticsGroup #2 \n"
          "_rlnMicrographOriginalPixelSize #3 \n_rlnVoltage #4 \n_rlnSphericalAberration #5 \n"
          "_rlnAmplitudeContrast #6 \n_rlnImagePixelSize #7 \n_rlnImageSize #8 \n"
          "_rlnImageDimensionality #9 \nopticsGroup1 1 0.885000 300.000000 2.700000 0.100000 "
          "3.540000 64 2 \n \n\n# version 30001\n\ndata_particles\n\nloop_ \n"
          + "".join(f"_{c} #{i} \n" for i, c in enumerate(COLUMNS, 1)))


def generate(path: Path, n: int, seed: int = 0) -> float:
    """A RELION 3.1 data.star of ``n`` particles (N_CLASSES classes), written in blocks of 10^5 rows.
    Rows are drawn from a pool of 2^16 random ones; the image name and the class vary per row."""
    rng = np.random.default_rng(seed)
    pool = 1 << 16
    mic = rng.integers(1, 20000, pool)
    pre = [f"{x:.1f} {y:.1f} {f:.4f} ".encode() for x, y, f in
           zip(rng.uniform(0, 4096, pool), rng.uniform(0, 4096, pool), rng.normal(2, 1, pool))]
    mid = [(f" MotionCorr/job002/Movies/mic_{m:05d}.mrc 1 {r:.3f} {fom:.4f} {du:.1f} {dv:.1f} "
            f"{da:.2f} 0.0 1.0 0.0 1 0.0 0.0 {psi:.3f} {ox:.3f} {oy:.3f} ").encode()
           for m, r, fom, du, dv, da, psi, ox, oy in
           zip(mic, rng.uniform(3, 8, pool), rng.uniform(0, .3, pool), rng.uniform(8e3, 25e3, pool),
               rng.uniform(8e3, 25e3, pool), rng.uniform(0, 180, pool), rng.uniform(-180, 180, pool),
               rng.normal(0, 2, pool), rng.normal(0, 2, pool))]
    post = [f" {c:.5f} {ll:.3f} {p:.5f} {s}\n".encode() for c, ll, p, s in
            zip(rng.normal(.55, .04, pool), rng.normal(14700, 60, pool), rng.uniform(0, 1, pool),
                rng.integers(1, 40, pool))]
    names = [f"@Extract/job007/Movies/mic_{m:05d}.mrcs".encode() for m in mic]
    classes = [str(c).encode() for c in range(N_CLASSES + 1)]
    t0 = time.perf_counter()
    with open(path, "wb") as handle:
        handle.write(HEADER.encode())
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            rows = rng.integers(0, pool, m).tolist()
            cls = rng.integers(1, N_CLASSES + 1, m).tolist()
            handle.write(b"".join([pre[j] + b"%06d" % ((start + i) % 999_999 + 1) + names[j] + mid[j]
                                   + classes[c] + post[j] for i, (j, c) in enumerate(zip(rows, cls))]))
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- child steps
def _step(name: str, path: str, out: str) -> dict:
    import tracemalloc

    import starfile  # noqa: F401  (same imports for every step, baseline included)

    from classranker_plugin.classset import Selection
    from classranker_plugin.io.particles import (count_particles, find_particle_loop, particle_classes,
                                                 write_subset)
    result = {}
    name, *flags = name.split("+")
    trace = "trace" in flags             # tracemalloc slows allocations: memory from a second run
    cold = "cold" in flags
    if cold:
        drop_from_cache(Path(path))
    if trace:
        tracemalloc.start()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    if name == "read":
        buffer = bytearray(1 << 24)
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass
    elif name == "starfile":
        import starfile as sf
        table = sf.read(path)["particles"]
        result["rows"] = len(table)
    elif name == "count":
        values, counts = count_particles(find_particle_loop(path))
        result["rows"] = int(counts.sum())
    elif name == "classes":
        result["rows"] = len(particle_classes(path))
    elif name == "subset":
        keep = np.arange(1, N_CLASSES // 2 + 1)
        write_subset(path, [(out, Selection(classes=keep))])
        result["bytes_written"] = os.path.getsize(out)
    result["seconds"] = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime - cpu0
    if trace:
        result["tracemalloc_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_step(name: str, path: Path, out: Path) -> dict:
    command = [sys.executable, __file__, "--step", name, str(path), str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if "+numpy" in name:                 # the scanner used where the C inner loops were not built
        env["CLASSRANKER_PURE_PYTHON"] = "1"
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"step {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def drop_from_cache(path: Path) -> None:
    """Drop the file's pages from the page cache (clean pages only: the file is synced first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cat_seconds(path: Path, repeats: int = 3, cold: bool = False) -> tuple[float, float]:
    """(best wall time, its CPU time) of `cat path > /dev/null`: page cache warmed first, or (cold)
    the file dropped from it before each run."""
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    best = (float("inf"), float("nan"))
    for _ in range(repeats):
        if cold:
            drop_from_cache(path)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
        seconds = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        best = min(best, (seconds, cpu))
    return best


def copy_half_seconds(path: Path, out: Path, repeats: int = 3) -> tuple[float, float]:
    """(best wall time, its CPU time) of `head -c <half> file > out && sync out`, the file dropped
    from the cache first: the I/O a subset keeping half the rows cannot avoid (read all, write and
    fsync half)."""
    half = path.stat().st_size // 2
    best = (float("inf"), float("nan"))
    for _ in range(repeats):
        drop_from_cache(path)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(["sh", "-c", f'head -c {half} "$0" > "$1" && sync "$1"', str(path), str(out)],
                       check=True)
        seconds = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, (seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
        out.unlink()
    return best


def available_mb() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--particles", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--folder", type=Path, default=REPO / "scratch" / "particle_bench")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--step", nargs=3, metavar=("NAME", "PATH", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(_step(*args.step)))
        return
    args.folder.mkdir(parents=True, exist_ok=True)
    need = max(args.particles) * 240 * 1.6 / 2**30
    free = shutil.disk_usage(args.folder).free / 2**30
    print(f"folder {args.folder}: {free:.0f} GiB free, about {need:.1f} GiB needed")
    if free < need + 1:
        sys.exit("not enough disk space: give --folder on a larger disk")
    baseline = run_step("baseline", args.folder, args.folder / "none")["peak_rss_mb"]
    print(f"child baseline (python + numpy + pandas + starfile + classranker io): {baseline:.0f} MB RSS")
    starfile_runs = {}   # particles -> (peak RSS MB, seconds, CPU seconds) of starfile.read
    try:
        for n in sorted(args.particles):
            path = args.folder / f"run_it025_data_{n}.star"
            out = args.folder / f"subset_{n}.star"
            seconds = generate(path, n)
            os.sync()                                 # clean pages: the cold runs can drop them
            size = path.stat().st_size
            print(f"\n{n:,} particles: {size / 1e6:,.0f} MB ({size / n:.0f} bytes a row), generated in "
                  f"{seconds:.1f} s")
            rows = []
            cat = {False: cat_seconds(path), True: cat_seconds(path, cold=True)}
            rows.append(("cat > /dev/null (warm)", *cat[False], None, None, cat[False][0]))
            rows.append(("cat > /dev/null (cold)", *cat[True], None, None, cat[True][0]))
            copy = copy_half_seconds(path, out)
            rows.append(("head -c half > file, sync (cold)", *copy, None, None, cat[True][0]))
            steps = (("read", "python read, 16 MB chunks"), ("read+cold", "python read (cold)"),
                     ("starfile", "starfile.read"), ("count", "count pass (ours)"),
                     ("count+cold", "count pass (ours, cold)"), ("classes", "class array int32 (ours)"),
                     ("subset", "subset, half the classes (ours)"),
                     ("subset+cold", "subset (ours, cold)"),
                     ("count+numpy", "count pass (numpy scanner, no C)"),
                     ("subset+numpy", "subset (numpy scanner, no C)"))
            for name, label in steps:
                t_cat = cat[name.endswith("+cold")][0]
                if name == "starfile" and starfile_runs:
                    small_n, (small_peak, small_seconds, small_cpu) = max(starfile_runs.items())
                    estimate = (small_peak - baseline) * n / small_n + baseline
                    if estimate > available_mb() / 2:
                        print(f"  starfile.read skipped: about {estimate / 1024:.1f} GiB by extrapolation "
                              f"from {small_n:,} particles (> half of the {available_mb() / 1024:.1f} GiB "
                              f"available)")
                        rows.append((label + " (extrapolated x%d, not run)" % (n // small_n),
                                     small_seconds * n / small_n, small_cpu * n / small_n,
                                     estimate, None, t_cat))
                        continue
                result = run_step(name, path, out)
                if name in ("count", "classes", "subset"):   # memory: warm runs of the default scanner
                    result["tracemalloc_mb"] = run_step(name + "+trace", path, out)["tracemalloc_mb"]
                if name == "starfile":
                    starfile_runs[n] = (result["peak_rss_mb"], result["seconds"], result["cpu_seconds"])
                rows.append((label, result["seconds"], result["cpu_seconds"], result["peak_rss_mb"],
                             result.get("tracemalloc_mb"), t_cat))
                if name.startswith("subset") and "numpy" not in name:
                    print(f"  subset: {result['bytes_written'] / 1e6:,.0f} MB written")
                    out.unlink(missing_ok=True)
            print(f"  {'step':<48} {'time s':>8} {'x cat':>7} {'CPU s':>7} {'peak RSS MB':>12} "
                  f"{'above base':>11} {'tracemalloc MB':>15}")
            for label, seconds, cpu, rss, traced, t_cat in rows:
                above = "" if rss is None else f"{rss - baseline:11.0f}"
                rss_text = "" if rss is None else f"{rss:12.0f}"
                traced_text = "" if traced is None else f"{traced:15.1f}"
                print(f"  {label:<48} {seconds:8.2f} {seconds / t_cat:7.1f} {cpu:7.2f} {rss_text:>12} "
                      f"{above:>11} {traced_text:>15}")
            if not args.keep:
                path.unlink()
    finally:
        if not args.keep:
            for leftover in args.folder.glob("*.star"):
                leftover.unlink()


if __name__ == "__main__":
    main()

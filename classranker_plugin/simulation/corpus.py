"""A corpus of genuine, labelled RELION Class2D jobs, run side by side and resumable.

``plan_corpus`` draws job parameters (maps, K, particle count, box, pixel size, SNR, junk fraction and
kinds, iterations, CTF or not); jobs whose maps belong to the held-out family (default: generated
ring-shaped densities) form the test split, and no training job contains that family.
``run_corpus`` runs the jobs in a process pool (each relion_refine with --j ``threads``), skips
finished jobs (``simulation.json`` present), reruns half-finished ones from scratch, stops starting new
jobs once a time budget is spent, and keeps ``jobs.csv`` (parameters, status, timings, class counts)
up to date after every job.
"""
from __future__ import annotations

import json
import shutil
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .relion_engine import DONE_FILE, is_finished, simulate_relion_job
from .relion_junk import DEFAULT_RELION_JUNK
from .relion_programs import progress

JOBS_FILE = "jobs.csv"
TRAIN_LAYOUTS = ("globular", "elongated", "cyclic", "dihedral")
HOLDOUT_LAYOUT = "ring"
BETAGAL_MAPS = ("Refine3D_job027_run_class001.mrc", "Class3D_job018_run_it025_class002.mrc",
                "Class3D_job018_run_it025_class003.mrc", "Class3D_job018_run_it025_class004.mrc")
SPEC_COLUMNS = ("job_id", "split", "maps", "n_particles", "junk_fraction", "junk_kinds", "box", "pixel_size", "snr",
                "K", "iterations", "ctf", "seed", "preferred_views")


def shared_maps(maps_dir) -> list:
    """The real beta-galactosidase maps present in ``maps_dir`` (none when the folder is absent)."""
    if maps_dir is None or not Path(maps_dir).is_dir():
        return []
    return [str(Path(maps_dir) / name) for name in BETAGAL_MAPS if (Path(maps_dir) / name).is_file()]


def plan_corpus(n_jobs: int, seed: int = 0, real_maps: Sequence[str] = (), holdout_every: int = 5,
                holdout_layout: str = HOLDOUT_LAYOUT, first_index: int = 0, style: str = "converged",
                wide_every: int = 0) -> list:
    """``n_jobs`` job specifications (dicts); every ``holdout_every``-th job is a held-out test job.

    style "converged": 6-10 iterations, K 10-18, 20-30 particles per class, SNR 0.05-0.5 (of the imaged
    signal), preferred orientations (3-8 views) in 60% of the jobs;
    style "quick": 4-6 iterations, K 10-24, 15-25 particles per class, SNR 0.05-0.3, uniform views
    (cheaper, noisier labels: many classes stay mixed);
    style "fine": the samplings people use, box 96 or 128 at 1.2-4 A/px (at least 2.4 A/px at box 128
    and 3 A/px at box 96 when a real map is in the job, so that it fits the box), K 8-12, 20-25
    particles per class, 6 iterations, SNR 0.05-0.3 (about a minute per job on one core);
    style "large": the same at box 192 or 256 and 1.0-2.0 A/px (at least 1.6 / 1.2 A/px with a real
    map). Job numbers start after ``first_index`` (to extend a corpus).
    With ``wide_every`` N > 0, every N-th training job is a wide one (box 48, K 30-60, 12-18 particles per
    class, up to 900 particles, 6-8 iterations): about 8x the cost of a typical job, for the many-class
    look of a real K=50-100 run.
    """
    rng = np.random.default_rng([seed, first_index])
    if style not in ("converged", "quick", "fine", "large"):
        raise ValueError(f"unknown corpus style {style!r}")
    quick, large = style == "quick", style == "large"
    fine = style == "fine" or large
    specs = []
    for index in range(first_index, first_index + n_jobs):
        test = holdout_every > 0 and index % holdout_every == holdout_every - 1
        n_maps = int(rng.integers(1, 3))
        if test:
            maps = [f"generated:{holdout_layout}"] * n_maps
        else:
            pool = [f"generated:{layout}" for layout in TRAIN_LAYOUTS] + list(real_maps) * 2
            maps = [str(m) for m in rng.choice(pool, size=n_maps, replace=False)]
        wide = not test and wide_every > 0 and index % wide_every == wide_every // 2
        if wide:
            box = 48
        elif fine:
            box = int(rng.choice([192, 256] if large else [96, 128]))
        else:
            box = int(rng.choice([48, 48, 48, 48, 64]))
        if wide:
            K = int(rng.integers(30, 61))
            per_class, iterations, snr_range = rng.uniform(12, 18), int(rng.integers(6, 9)), (0.05, 0.5)
        elif fine:
            K = int(rng.integers(8, 13))
            per_class, iterations, snr_range = rng.uniform(20, 25), 6, (0.05, 0.3)
        elif quick:
            K = int(rng.integers(10, 25)) if box == 48 else int(rng.integers(10, 17))
            per_class, iterations, snr_range = rng.uniform(15, 25), int(rng.integers(4, 7)), (0.05, 0.3)
        else:
            K = int(rng.integers(10, 19)) if box == 48 else int(rng.integers(10, 15))
            per_class, iterations, snr_range = rng.uniform(20, 30), int(rng.integers(6, 11)), (0.05, 0.5)
        most = 900 if wide else 500 if box == 48 else 300
        if fine:   # a real map (beta-galactosidase, ~200 A) must fit the box
            real = any(not m.startswith("generated") for m in maps)
            finest = {96: 3.0, 128: 2.4, 192: 1.6, 256: 1.2}[box] if real else (1.0 if large else 1.2)
            pixel_size = rng.uniform(finest, 2.0 if large else 4.0)
        else:
            pixel_size = rng.uniform(5.0, 7.5) if box == 48 else rng.uniform(4.0, 6.0)
        n_particles = int(np.clip(round(K * per_class / 10) * 10, 200, most))
        kinds = sorted(rng.choice(DEFAULT_RELION_JUNK, size=int(rng.integers(3, len(DEFAULT_RELION_JUNK) + 1)),
                                  replace=False).tolist())
        specs.append({
            "job_id": f"job{index + 1:03d}", "split": "test" if test else "train", "maps": maps,
            "n_particles": n_particles, "junk_fraction": round(float(rng.uniform(0.2, 0.6)), 2),
            "junk_kinds": kinds, "box": box,
            "pixel_size": round(float(pixel_size), 2),
            "snr": round(float(np.exp(rng.uniform(*np.log(snr_range)))), 3),
            "K": K, "iterations": iterations, "ctf": bool(rng.random() < 0.8),
            "preferred_views": 0 if quick or rng.random() < 0.4 else int(rng.integers(3, 9)),
            "seed": int(rng.integers(1, 2 ** 31)), "style": "wide" if wide else style,
        })
    return specs


def _run_one(root: str, spec: dict, threads: int) -> dict:
    """Worker: run one job (from scratch if a half-finished folder is there); never raises."""
    outdir = Path(root) / spec["job_id"]
    start = time.time()
    try:
        if outdir.exists():
            shutil.rmtree(outdir)  # half-finished: no simulation.json
        parameters = {k: spec[k] for k in SPEC_COLUMNS if k in spec and k not in ("job_id", "split")}
        summary = simulate_relion_job(outdir, threads=threads,
                                      extra_parameters={"job_id": spec["job_id"], "split": spec["split"]}, **parameters)
        prune_iterations(outdir, spec["iterations"])
        return {"job_id": spec["job_id"], "status": "done", "n_classes": summary.n_classes,
                "n_good_classes": summary.n_good_classes, "seconds": round(time.time() - start, 1),
                "refine_seconds": summary.seconds.get("refine"), "actual_pixel_size": round(summary.pixel_size, 4),
                "particle_diameter": summary.particle_diameter}
    except Exception:  # recorded in jobs.csv; the corpus goes on
        (outdir / "corpus_error.txt").parent.mkdir(parents=True, exist_ok=True)
        (outdir / "corpus_error.txt").write_text(traceback.format_exc())
        return {"job_id": spec["job_id"], "status": "failed", "seconds": round(time.time() - start, 1)}


def prune_iterations(outdir: Path, iterations: int) -> None:
    """Delete the intermediate iterations' files (the last iteration is what a user selects from)."""
    last = f"run_it{iterations:03d}_"
    for path in Path(outdir).glob("run_it*"):
        if not path.name.startswith(last):
            path.unlink()


def finished_record(outdir: Path) -> dict:
    info = json.loads((outdir / DONE_FILE).read_text())
    return {"job_id": outdir.name, "status": "done", "n_classes": info["n_classes"],
            "n_good_classes": info["n_good_classes"], "seconds": info["seconds"].get("total"),
            "refine_seconds": info["seconds"].get("refine"), "actual_pixel_size": round(info["pixel_size"], 4),
            "particle_diameter": info["particle_diameter"]}


def write_jobs(root: Path, specs: list, records: dict) -> Path:
    rows = []
    for spec in specs:
        row = {k: (";".join(v) if isinstance(v, list) else v) for k, v in spec.items()}
        row.update(records.get(spec["job_id"], {"status": "pending"}))
        rows.append(row)
    tmp = root / (JOBS_FILE + ".tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    tmp.replace(root / JOBS_FILE)
    return root / JOBS_FILE


def run_corpus(root, specs: list, workers: int = 2, threads: int = 1, budget_s: Optional[float] = None) -> pd.DataFrame:
    """Run (or resume) the jobs of ``specs`` under ``root``; returns the jobs table (also root/jobs.csv)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "plan.json").write_text(json.dumps(specs, indent=1))
    records = {}
    todo = []
    for spec in specs:
        outdir = root / spec["job_id"]
        if is_finished(outdir):
            records[spec["job_id"]] = finished_record(outdir)
        else:
            todo.append(spec)
    progress(f"corpus {root}: {len(records)} job(s) already done, {len(todo)} to run, "
             f"{workers} worker(s) x --j {threads}")
    write_jobs(root, specs, records)
    start = time.time()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        running = {}
        queue = list(todo)
        while queue or running:
            while queue and len(running) < workers and (budget_s is None or time.time() - start < budget_s):
                spec = queue.pop(0)
                records[spec["job_id"]] = {"status": "running"}
                running[pool.submit(_run_one, str(root), spec, threads)] = spec
            if not running:
                break
            write_jobs(root, specs, records)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                spec = running.pop(future)
                records[spec["job_id"]] = future.result()
                progress(f"corpus: {spec['job_id']} {records[spec['job_id']]['status']} "
                         f"({records[spec['job_id']].get('seconds')} s)")
            write_jobs(root, specs, records)
    write_jobs(root, specs, records)
    return pd.read_csv(root / JOBS_FILE)


def throughput(jobs: pd.DataFrame, wall_s: float, threads: int = 1, already_done=()) -> dict:
    """Classes per core-hour (RELION + our code, per job) and per wall-clock hour of this run
    (jobs in ``already_done`` were finished before it and count only in the totals)."""
    done = jobs[jobs["status"] == "done"]
    new = done[~done["job_id"].isin(list(already_done))]
    classes = float(done["n_classes"].sum()) if len(done) else 0.0
    core_s = float(done["seconds"].sum()) * threads if len(done) else 0.0
    return {"jobs": int(len(done)), "classes": int(classes),
            "good_classes": int(done["n_good_classes"].sum()) if len(done) else 0,
            "core_hours": round(core_s / 3600, 3),
            "classes_per_core_hour": round(classes / (core_s / 3600), 1) if core_s else 0.0,
            "jobs_this_run": int(len(new)),
            "classes_per_wall_hour": round(float(new["n_classes"].sum()) / (wall_s / 3600), 1) if wall_s else 0.0}

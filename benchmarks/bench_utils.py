"""Helpers shared by the training benchmarks (label_noise.py, generalization.py): simulated job
families, quiet training, evaluation rows and markdown tables. Not a benchmark itself."""
from __future__ import annotations

import contextlib
import io
import logging
import math
from pathlib import Path
from typing import Optional

import numpy as np

from classranker_plugin.simulation import simulate_job
from classranker_plugin.training.evaluation import evaluate
from classranker_plugin.training.trainer import train


def quiet_logs() -> None:
    """Only warnings from the package: the benchmarks print their own tables."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("classranker_plugin").setLevel(logging.WARNING)


def simulate_family(folder: Path, n_jobs: int, first_seed: int, classes: int, box: int = 64,
                    pixel_size: float = 3.5, n_particles: Optional[int] = None, metadata: str = "realistic",
                    junk_kinds=None) -> list:
    """``n_jobs`` simulated Class2D jobs in ``folder``/Class2D/jobNNN; junk fraction 0.25-0.55 per job."""
    jobs = []
    for j in range(n_jobs):
        seed = first_seed + j
        junk = float(np.random.default_rng([seed, 11]).uniform(0.25, 0.55))
        jobs.append(simulate_job(Path(folder) / "Class2D" / f"job{j + 1:03d}", n_classes=classes, box=box,
                                 pixel_size=pixel_size, n_particles=n_particles or 60 * classes,
                                 junk_fraction=junk, junk_kinds=junk_kinds, metadata=metadata, seed=seed))
    return jobs


def quiet_train(dataset: Path, out: Path, epochs: int, seed: int = 0, label_noise: float = 0.0,
                batch_size: int = 32) -> dict:
    """trainer.train on the CPU without progress output; returns its summary."""
    with contextlib.redirect_stderr(io.StringIO()):
        return train(dataset, out, epochs=epochs, batch_size=batch_size, device="cpu", seed=seed,
                     label_noise=label_noise, progress=False, patience=0, command_line="benchmark")


def quiet_evaluate(model: Path, inputs: list, out: Path, labels=None, split: Optional[str] = None) -> dict:
    """training.evaluation.evaluate at cutoff 0.5 on the CPU, without plots."""
    return evaluate(model, inputs, out, cutoff=0.5, labels=labels, split=split, device="cpu", plots=False)


def model_and_baseline(summary: dict) -> dict:
    """ROC AUC and MCC (at 0.5 and at the best threshold) of the model and of the best baseline."""
    metrics = summary["model_metrics"]
    best = metrics.get("at_best_mcc") or {}
    row = {"classes": metrics["classes"], "good": metrics["good"], "roc_auc": metrics["roc_auc"],
           "mcc_05": metrics["at_cutoff"]["mcc"], "mcc_best": best.get("mcc", math.nan),
           "threshold_best": best.get("threshold", math.nan)}
    baselines = {name: b for name, b in summary["baselines"].items() if b.get("roc_auc") is not None
                 and np.isfinite(b["roc_auc"])}
    if baselines:
        name = max(baselines, key=lambda n: baselines[n]["roc_auc"])
        row.update({"baseline": name, "baseline_roc_auc": baselines[name]["roc_auc"],
                    "baseline_mcc_best": baselines[name].get("best_mcc", math.nan)})
    else:
        row.update({"baseline": "-", "baseline_roc_auc": math.nan, "baseline_mcc_best": math.nan})
    return row


def markdown_table(rows: list, columns: dict) -> str:
    """``columns``: key -> header; floats with 3 decimals, NaN/None as '-'."""
    def cell(value):
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return "-"
        if isinstance(value, (float, np.floating)):
            return f"{value:.3f}"
        return str(value)
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)



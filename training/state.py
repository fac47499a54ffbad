"""The resumable training state (last.pt) and the per-epoch history files (metrics.csv, metrics.png).

last.pt holds only tensors and plain Python values, so it loads with ``weights_only=True``:

============= =====================================================================================
key           value
============= =====================================================================================
format        "classranker-training-state", format_version
epoch         the last finished epoch (0-based); training resumes at epoch + 1
config        the training options that must not change on resume (seed, epochs, batch size, ...)
arch          network config; feature_names / feature_mean / feature_std of the run
model         network weights; optimizer, scheduler, scaler: their state_dicts
history       one dict of metrics per finished epoch
best          epoch and validation metrics of the best model so far (written to model.pt)
bad_epochs    epochs since the best one (early stopping)
rng           torch CPU (and CUDA) generator states at the end of the epoch
============= =====================================================================================
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..checkpoint import _plain
from ..errors import InputError
from ..io.atomic import atomic_write

STATE_FORMAT = "classranker-training-state"
STATE_VERSION = 1
STATE_FILE = "last.pt"
BEST_FILE = "model.pt"
#: options that must be equal for a resumed run to be the same run
RESUME_KEYS = ("seed", "epochs", "batch_size", "lr", "weight_decay", "balance", "schedule", "augment",
               "mask_metadata", "freeze_cnn", "arch", "dataset_classes", "label_noise")


def save_state(path: Path, payload: dict) -> None:
    """Write the training state atomically (an interrupted save keeps the previous last.pt)."""
    payload = {"format": STATE_FORMAT, "format_version": STATE_VERSION, **payload}
    for key in ("config", "history", "best", "arch"):
        payload[key] = _plain(payload.get(key))
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: Path) -> dict:
    """The training state, weights-only; InputError naming the file when it is missing or foreign."""
    if not path.is_file():
        raise InputError("no training state to resume from", path,
                         "start without --resume, or give the --o folder of the interrupted run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise InputError(f"cannot read the training state ({type(error).__name__})", path,
                         "the file is damaged; start again without --resume") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError("not a ClassRanker training state", path, "give the --o folder of a 'classranker train' run")
    return state


def check_resumable(state: dict, config: dict, arch: dict, feature_names: list, path: Path) -> None:
    """InputError naming last.pt when the run it holds differs from the one asked for."""
    if dict(state.get("arch") or {}) != _plain(arch):
        raise InputError(f"the saved run uses another architecture ({state.get('arch')}, now {arch})", path,
                         "resume with the same options and dataset, or start a new run in another folder")
    if list(state.get("feature_names") or []) != list(feature_names):
        raise InputError("the saved run was trained on other features than this dataset's", path,
                         "resume with the same dataset, or start a new run in another folder")
    saved = state.get("config") or {}
    changed = [k for k in RESUME_KEYS if k in config and saved.get(k) != _plain(config[k])]
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {_plain(config[k])!r}" for k in changed)
        raise InputError(f"the options differ from the interrupted run ({detail})", path,
                         "resume with the options of that run, or start a new run in another folder")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: dict) -> None:
    if state and "torch" in state:
        torch.set_rng_state(state["torch"])
    if state and "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_history(out_dir: Path, history: list) -> None:
    """metrics.csv (one row per epoch) and metrics.png (losses and validation AUC)."""
    table = pd.DataFrame(history)
    with atomic_write(out_dir / "metrics.csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    if table.empty:
        return
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    epochs = table["epoch"].to_numpy()
    left.plot(epochs, table["train_loss"], label="training")
    if "val_loss" in table and np.isfinite(table["val_loss"]).any():
        left.plot(epochs, table["val_loss"], label="validation")
    left.set(xlabel="epoch", ylabel="loss (BCE)", title="loss")
    left.legend()
    for column, label in (("val_auc", "validation"), ("val_auc_no_metadata", "validation, no metadata")):
        if column in table and np.isfinite(table[column]).any():
            right.plot(epochs, table[column], marker="o", ms=3, label=label)
    right.axhline(0.5, color="grey", lw=0.8, ls=":")
    right.set(xlabel="epoch", ylabel="ROC AUC", title="validation ROC AUC", ylim=(0.4, 1.01))
    if right.get_legend_handles_labels()[0]:
        right.legend(loc="lower right")
    with atomic_write(out_dir / "metrics.png") as tmp:
        figure.savefig(tmp, dpi=90, format="png")
    plt.close(figure)


def remove_stale(out_dir: Path) -> None:
    """Files of an earlier run in the same folder that a fresh (not resumed) run replaces."""
    for name in (STATE_FILE, BEST_FILE, "metrics.csv", "metrics.png"):
        target = out_dir / name
        if target.is_file():
            os.remove(target)

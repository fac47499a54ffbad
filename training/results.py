"""Per-epoch validation records, the choice of the best epoch, and writing the best model."""
from __future__ import annotations

import datetime
import math

import numpy as np

from .. import __version__
from ..checkpoint import Ranker, calibrated_scores, save_checkpoint
from .calibration import fit_calibration
from .metrics import average_precision, best_mcc_threshold, confusion, roc_auc

CUTOFF = 0.5


def bce(logits: np.ndarray, labels: np.ndarray) -> float:
    if not len(logits):
        return float("nan")
    z = np.asarray(logits, np.float64)
    return float(np.mean(np.maximum(z, 0) - z * labels + np.log1p(np.exp(-np.abs(z)))))


def epoch_record(epoch, train_loss, logits, logits_no_metadata, labels, optimizer, seen, train_seconds,
                 seconds, world) -> dict:
    """One row of metrics.csv (images_per_s: training images per second over all ranks, validation
    excluded; seconds: the whole epoch with validation)."""
    record = {"epoch": int(epoch), "train_loss": float(train_loss), "val_loss": bce(logits, labels),
              "val_auc": roc_auc(labels, logits) if len(labels) else float("nan"),
              "val_pr_auc": average_precision(labels, logits) if len(labels) else float("nan"),
              "val_auc_no_metadata": (roc_auc(labels, logits_no_metadata)
                                      if logits_no_metadata is not None and len(labels) else float("nan")),
              "lr": float(optimizer.param_groups[0]["lr"]), "seconds": float(seconds),
              "images_per_s": float(seen * world / max(train_seconds, 1e-9))}
    return record


def _key(record: dict) -> tuple:
    auc, loss = record.get("val_auc", float("nan")), record.get("val_loss", float("nan"))
    # AUCs within 0.001 count as equal (an under-trained epoch must not win on noise): the loss decides
    return (round(auc, 3) if math.isfinite(auc) else -math.inf,
            -loss if math.isfinite(loss) else -record.get("train_loss", math.inf))


def is_better(record: dict, best: dict) -> bool:
    """Higher validation AUC wins; equal AUC -> lower validation loss (training loss without validation)."""
    return best.get("epoch", -1) < 0 or _key(record) > _key(best)


def best_record(record: dict) -> dict:
    return {k: record[k] for k in ("epoch", "val_auc", "val_loss", "train_loss", "val_pr_auc")}


def validation_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float, bias: float = 0.0) -> dict:
    """Metrics stored in model.pt (scores calibrated with ``temperature`` and ``bias``)."""
    if not len(labels):
        return {}
    scores = calibrated_scores(logits, temperature, bias)
    at_cutoff = confusion(labels, scores, CUTOFF)
    threshold, best_mcc = best_mcc_threshold(labels, scores)
    return {"val_auc": roc_auc(labels, scores), "val_pr_auc": average_precision(labels, scores),
            "cutoff": CUTOFF, "precision_at_cutoff": at_cutoff["precision"], "recall_at_cutoff": at_cutoff["recall"],
            "mcc_at_cutoff": at_cutoff["mcc"], "best_mcc_threshold": threshold, "best_mcc": best_mcc,
            "n_valid": int(len(labels)), "n_valid_good": int((np.asarray(labels) >= 0.5).sum())}


def save_best(path, network, mean, std, logits, labels, record: dict, run: dict) -> dict:
    """Calibrate on the validation split and write model.pt; returns the best-epoch summary."""
    temperature, bias = fit_calibration(logits, labels) if len(labels) else (1.0, 0.0)
    metrics = {**validation_metrics(logits, labels, temperature, bias), "temperature": temperature, "bias": bias,
               "epoch": record["epoch"] + 1, "val_loss": record["val_loss"],
               "val_auc_no_metadata": record.get("val_auc_no_metadata"),
               "n_train": int((np.asarray(run["data"].split) == 0).sum())}
    data = run["data"]
    provenance = {"trained_with": f"classranker {__version__}",
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "command_line": run.get("command_line"), "training": run["config"],
                  "dataset": {"path": str(data.path), "counts": data.info.get("counts"),
                              "sources": [{k: s.get(k) for k in ("id", "type", "path", "classes")}
                                          for s in data.info.get("provenance", {}).get("sources", [])]}}
    ranker = Ranker(network=network, feature_set=data.info["feature_set"], feature_names=data.feature_names,
                    feature_mean=np.asarray(mean, np.float32), feature_std=np.asarray(std, np.float32),
                    image_kind=run["image_kind"], output="logit", temperature=temperature, bias=bias, metrics=metrics,
                    provenance=provenance)
    save_checkpoint(path, ranker)
    return {**best_record(record), "temperature": temperature, **{k: metrics.get(k) for k in
            ("precision_at_cutoff", "recall_at_cutoff", "mcc_at_cutoff")}}

"""``train``: fit a ranker on a dataset folder and write a calibrated, weights-only model.

Outputs in ``out_dir`` (rank 0 only when run under torchrun):

=========== ==========================================================================================
model.pt    the best model so far (highest validation ROC AUC), written by checkpoint.save_checkpoint
            with the feature mean/std of the training split, the temperature calibrated on the
            validation split and its validation metrics (AUC, precision and recall at cutoff 0.5)
last.pt     the full training state after the last finished epoch (see state.py); ``resume=True``
            continues from it and ends with the same weights as an uninterrupted run
metrics.csv one row per epoch: losses, validation AUCs, learning rate, time, images/s
metrics.png the same as curves
=========== ==========================================================================================

Training: BCE with logits on the soft labels, class balance by ``pos_weight`` (or a balanced
sampler), AdamW with a cosine (or plateau) schedule, batch augmentation, random masking of the
metadata features, mixed precision on CUDA, early stopping after ``patience`` epochs without a
better validation AUC. ``init`` fine-tunes a model (same features), ``freeze_cnn`` freezes its CNN.
``label_noise`` flips that share of the training labels (seeded; validation labels untouched), to
measure how robust training is to wrong labels.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from ..checkpoint import load_model
from ..errors import InputError
from ..model import build_network
from . import distributed
from .augment import AugmentConfig, FeatureMasker
from .dataset import load_dataset
from .loop import Batches, ProgressLine, StepOptions, epoch_order, epoch_seed, predict, train_epoch
from .masking import metadata_groups
from .results import best_record, epoch_record, is_better, save_best
from .state import (BEST_FILE, STATE_FILE, check_resumable, load_state, remove_stale, restore_rng,
                    rng_state, save_state, write_history)

PathLike = Union[str, os.PathLike]
log = logging.getLogger(__name__)

BALANCES = ("loss", "sampler", "none")
SCHEDULES = ("cosine", "plateau")


def _validate_options(epochs, batch_size, lr, balance, schedule, mask_metadata):
    if epochs < 1 or batch_size < 2 or not lr > 0:
        raise InputError(f"epochs ({epochs}) and batch size ({batch_size}) must be >= 1 and >= 2, "
                         f"learning rate ({lr}) > 0", fix="give e.g. --epochs 30 --batch-size 64 --lr 1e-3")
    if balance not in BALANCES or schedule not in SCHEDULES:
        raise InputError(f"unknown balance {balance!r} or schedule {schedule!r}",
                         fix=f"balance: {', '.join(BALANCES)}; schedule: {', '.join(SCHEDULES)}")
    if not 0.0 <= mask_metadata <= 1.0:
        raise InputError(f"metadata masking probability {mask_metadata} is outside [0, 1]")


def _network(data, init, arch, train_idx, seed):
    """(network, feature mean, feature std, image kind): fresh, or from the ``init`` checkpoint."""
    if init is not None:
        ranker = load_model(init, device="cpu", feature_names=data.feature_names)
        if ranker.output != "logit":
            raise InputError("this checkpoint regresses scores (RELION's MSE output) and cannot be fine-tuned "
                             "with the classification loss", init, "start from a ClassRanker model")
        config = ranker.network.config
        if arch is not None and config.get("arch") != arch:
            raise InputError(f"the checkpoint is a {config.get('arch')!r} network, not {arch!r}", init,
                             "leave out --arch when fine-tuning, or train from scratch")
        if int(config["image_size"]) != int(data.info["image_size"]):
            raise InputError(f"the checkpoint takes {config['image_size']} px images, the dataset has "
                             f"{data.info['image_size']} px", init, "rebuild the dataset with that image size")
        return ranker.network, ranker.feature_mean, ranker.feature_std, ranker.image_kind
    torch.manual_seed(seed)
    network = build_network({"arch": arch or "classranker", "n_features": len(data.feature_names),
                             "image_size": int(data.info["image_size"])})
    features = np.asarray(data.features[np.sort(train_idx)], np.float64)
    mean, std = features.mean(axis=0), features.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    return network, mean.astype(np.float32), std.astype(np.float32), data.info["image_kind"]


def train(dataset_dir: PathLike, out_dir: PathLike, epochs: int = 30, batch_size: int = 64, lr: float = 1e-3,
          device: str = "auto", init: Optional[PathLike] = None, freeze_cnn: bool = False, resume: bool = False,
          seed: int = 0, patience: int = 10, weight_decay: float = 1e-4, balance: str = "loss",
          schedule: str = "cosine", augment: bool = True, mask_metadata: float = 0.3, amp: bool = True,
          arch: Optional[str] = None, label_noise: float = 0.0, progress: bool = True,
          command_line: Optional[str] = None,
          on_epoch_end: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Train and return a summary (best epoch, its metrics, output paths). See the module docstring."""
    _validate_options(epochs, batch_size, lr, balance, schedule, mask_metadata)
    data = load_dataset(dataset_dir)
    train_idx, valid_idx = data.indices("train"), data.indices("valid")
    labels = np.array(data.labels, np.float32)
    if label_noise:  # robustness experiments: flip a share of the training labels, never validation ones
        flip = train_idx[np.random.default_rng([seed, 7]).random(len(train_idx)) < label_noise]
        labels[flip] = 1.0 - labels[flip]
    if len(train_idx) < 2 or (labels[train_idx] >= 0.5).all() or (labels[train_idx] < 0.5).all():
        raise InputError("the training split needs classes of both labels", dataset_dir,
                         "rebuild the dataset with more classes of the rarer label")
    context = distributed.setup(device)
    out_dir = Path(out_dir)
    if freeze_cnn and init is None:
        log.warning("freeze_cnn without init freezes a randomly initialised CNN")
    network, mean, std, image_kind = _network(data, init, arch, train_idx, seed)
    if freeze_cnn:
        for parameter in network.cnn.parameters():
            parameter.requires_grad_(False)
    network.to(context.device)
    use_amp = bool(amp and context.device.type == "cuda")
    config = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
              "balance": balance, "schedule": schedule, "augment": augment, "mask_metadata": mask_metadata,
              "freeze_cnn": freeze_cnn, "arch": network.config["arch"], "dataset_classes": len(data),
              "label_noise": label_noise, "patience": patience, "amp": use_amp,
              "init": None if init is None else str(init),
              "dataset": str(Path(dataset_dir).resolve()), "world_size": context.world_size}
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=lr * 0.01)
                 if schedule == "cosine" else
                 torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history, best, bad_epochs, start = [], {"epoch": -1}, 0, 0
    state_path = out_dir / STATE_FILE
    if resume:
        state = load_state(state_path)
        check_resumable(state, config, network.config, data.feature_names, state_path)
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        mean, std = np.asarray(state["feature_mean"], np.float32), np.asarray(state["feature_std"], np.float32)
        history, best, bad_epochs = list(state["history"]), dict(state["best"]), int(state["bad_epochs"])
        start = int(state["epoch"]) + 1
        restore_rng(state.get("rng"))
    elif context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale(out_dir)
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier(context)

    model = distributed.wrap(network, context)
    batches = Batches(data.images, data.features, labels, context.device, mean, std)
    groups = metadata_groups(data.info["feature_set"], data.feature_names) if mask_metadata > 0 else []
    masker = FeatureMasker(groups, p=mask_metadata)
    good = float((labels[train_idx]).sum())
    step = StepOptions(batch_size=batch_size, augment=AugmentConfig() if augment else None, masker=masker,
                       pos_weight=(len(train_idx) - good) / max(good, 1e-6) if balance == "loss" else None,
                       amp=use_amp, freeze_cnn=freeze_cnn)
    run_info = {"config": config, "image_kind": image_kind, "data": data, "command_line": command_line}
    if not len(valid_idx) and context.is_main:
        log.warning("%s has no validation split: no early stopping, no calibration (temperature 1)", dataset_dir)

    stop = start >= epochs or (patience and bad_epochs >= patience)
    epoch = start
    while not stop:
        t0 = time.perf_counter()
        seed_e = epoch_seed(seed, epoch)
        torch.manual_seed(seed_e)  # dropout
        generator = torch.Generator().manual_seed(seed_e + 1)
        order = epoch_order(train_idx, labels, balance, generator)
        bar = ProgressLine(epoch, epochs, progress and context.is_main)
        train_loss, seen = train_epoch(model, optimizer, scaler, batches, order, step, generator, context, bar)
        train_seconds = time.perf_counter() - t0
        bar.clear()
        logits = predict(network, batches, valid_idx, max(batch_size, 256), use_amp)
        no_meta = predict(network, batches, valid_idx, max(batch_size, 256), use_amp, masker) if masker else None
        record = epoch_record(epoch, train_loss, logits, no_meta, labels[valid_idx], optimizer, seen,
                              train_seconds, time.perf_counter() - t0, context.world_size)
        if schedule == "cosine":
            scheduler.step()
        else:
            scheduler.step(record["val_auc"] if np.isfinite(record["val_auc"]) else -record["val_loss"])
        history.append(record)
        if is_better(record, best):
            best, bad_epochs = best_record(record), 0
            if context.is_main:
                best = save_best(out_dir / BEST_FILE, network, mean, std, logits, labels[valid_idx], record, run_info)
        else:
            bad_epochs += 1
        stop = epoch + 1 >= epochs or bool(patience and len(valid_idx) and bad_epochs >= patience)
        if context.is_main:
            save_state(state_path, {"epoch": epoch, "config": config, "arch": network.config,
                                    "feature_names": data.feature_names, "feature_mean": mean.tolist(),
                                    "feature_std": std.tolist(), "model": network.state_dict(),
                                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                    "scaler": scaler.state_dict(), "history": history, "best": best,
                                    "bad_epochs": bad_epochs, "rng": rng_state()})
            write_history(out_dir, history)
            if progress:
                print(_epoch_line(record, epochs, bad_epochs, best), file=sys.stderr, flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        stop = distributed.broadcast_flag(stop, context)
        epoch += 1
    distributed.barrier(context)
    distributed.teardown(context)
    return {"model": str(out_dir / BEST_FILE), "state": str(state_path), "best": best,
            "epochs_run": len(history), "stopped_early": len(history) < epochs}


def _epoch_line(record: dict, epochs: int, bad_epochs: int, best: dict) -> str:
    flag = "*" if bad_epochs == 0 else " "
    return (f"epoch {record['epoch'] + 1:>3}/{epochs}{flag} loss {record['train_loss']:.4f}  "
            f"val loss {record['val_loss']:.4f}  val AUC {record['val_auc']:.3f}  "
            f"lr {record['lr']:.2e}  {record['seconds']:.1f} s ({record['images_per_s']:.0f} img/s)  "
            f"best AUC {best.get('val_auc', float('nan')):.3f} @ {best.get('epoch', -1) + 1}")

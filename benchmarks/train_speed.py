"""Training throughput (images/s, CPU and GPU when present) and dataset building speed (classes/s)
compared with the raw read speed of the class-average stacks. Prints figures; asserts nothing.

    python benchmarks/train_speed.py [--jobs 4] [--classes 100] [--box 128] [--epochs 3]
                                     [--batch-size 64] [--threads 2]
"""
import argparse
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import torch

from classranker_plugin.simulation import simulate_job
from classranker_plugin.training.dataset import build_dataset, load_dataset
from classranker_plugin.training.trainer import train


def read_speed(jobs) -> float:
    """Classes per second for reading every class average stack once (the floor of any builder)."""
    stacks = [next(Path(j).glob("*_classes.mrcs")) for j in jobs]
    t0 = time.perf_counter()
    n = 0
    for stack in stacks:
        with mrcfile.open(stack, permissive=True) as mrc:
            n += len(np.array(mrc.data, dtype=np.float32))
    return n / (time.perf_counter() - t0)


def training_speed(dataset, out, device, epochs, batch_size) -> dict:
    train(dataset, out, epochs=epochs, batch_size=batch_size, device=device, progress=False, patience=0)
    history = pd.read_csv(Path(out) / "metrics.csv")
    steady = history.iloc[1:] if len(history) > 1 else history  # the first epoch warms up
    return {"images_per_s": float(steady["images_per_s"].median()),
            "epoch_s": float(steady["seconds"].median()), "val_auc": float(history["val_auc"].iloc[-1])}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--box", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        jobs = [simulate_job(tmp / f"job{i}", n_classes=args.classes, box=args.box, pixel_size=2.0,
                             n_particles=20 * args.classes, seed=i) for i in range(args.jobs)]
        n = args.jobs * args.classes
        print(f"simulated {args.jobs} jobs x {args.classes} classes of box {args.box} in "
              f"{time.perf_counter() - t0:.1f} s (setup)")
        raw = read_speed(jobs)
        t0 = time.perf_counter()
        dataset = build_dataset(jobs, tmp / "dataset", command_line="benchmark")
        build = n / (time.perf_counter() - t0)
        size = sum(f.stat().st_size for f in (tmp / "dataset").iterdir()) / 2 ** 20
        print(f"dataset building: {build:8.0f} classes/s   (raw stack reading {raw:8.0f} classes/s; "
              f"building = reading + features + 64 px images; dataset {size:.1f} MiB)")
        print(f"  {len(load_dataset(dataset))} classes, {args.threads} CPU threads")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            result = training_speed(dataset, tmp / f"run_{device}", device, args.epochs, args.batch_size)
            name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {args.threads} threads"
            print(f"training on {name}: {result['images_per_s']:8.0f} images/s (batch {args.batch_size}, "
                  f"augmentation and masking on; epoch with validation {result['epoch_s']:.2f} s; "
                  f"val AUC after {args.epochs} epochs {result['val_auc']:.3f})")


if __name__ == "__main__":
    main()

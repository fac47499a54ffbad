"""Time to score 300 classes of box 256 on CPU (reading, features, inference) and to write the
particle subset of 10^6 particles. Prints figures; asserts nothing.

    python benchmarks/score_speed.py [--classes 300] [--box 256] [--particles 1000000] [--threads 2]
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from classranker_plugin.checkpoint import load_model
from classranker_plugin.features import compute_features
from classranker_plugin.io import read_classes
from classranker_plugin.io.writers import write_particles
from classranker_plugin.preprocess import model_images
from classranker_plugin.scoring import select_classes
from classranker_plugin.simulation import simulate_job


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--classes", type=int, default=300)
    parser.add_argument("--box", type=int, default=256)
    parser.add_argument("--particles", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        job = simulate_job(Path(tmp) / "job", n_classes=args.classes, box=args.box, pixel_size=1.2,
                           n_particles=args.particles, seed=1)
        print(f"simulated {args.classes} classes of box {args.box} + {args.particles} particles "
              f"in {time.perf_counter() - t0:.1f} s (setup, not scoring)")
        model_star = next(Path(job).glob("*_model.star"))

        t_start = time.perf_counter()
        ranker = load_model(device="cpu")
        t_model = time.perf_counter()
        classes = read_classes(model_star, with_particles=False)
        t_read = time.perf_counter()
        features = compute_features(classes, ranker.feature_set)
        images = model_images(classes, size=ranker.image_size)
        t_features = time.perf_counter()
        scores = ranker.score(images, features.values)
        t_inference = time.perf_counter()
        print(f"scoring {args.classes} classes of box {args.box} on {args.threads} CPU threads:")
        print(f"  load model  {t_model - t_start:7.3f} s")
        print(f"  reading     {t_read - t_model:7.3f} s  (model.star + classes.mrcs)")
        print(f"  features    {t_features - t_read:7.3f} s  (feature vectors + 64 px images)")
        print(f"  inference   {t_inference - t_features:7.3f} s")
        print(f"  total       {t_inference - t_model:7.3f} s  (after import and model load)")

        t0 = time.perf_counter()
        with_particles = read_classes(model_star)
        t_data = time.perf_counter()
        keep = select_classes(scores, with_particles.stat("particle_count"), cutoff=0.5)
        out = Path(tmp) / "particles.star"
        write_particles(out, with_particles, with_particles.class_numbers[keep])
        t_write = time.perf_counter()
        size = out.stat().st_size / 1e6
        print(f"particle subset of {len(with_particles.particles)} particles "
              f"({int(np.nansum(with_particles.stat('particle_count')[keep]))} kept):")
        print(f"  read data.star {t_data - t0:7.2f} s")
        print(f"  select+write   {t_write - t_data:7.2f} s  ({size:.0f} MB written, "
              f"{size / max(t_write - t_data, 1e-9):.0f} MB/s)")
        t0 = time.perf_counter()
        Path(tmp, "copy.star").write_bytes(out.read_bytes())
        print(f"  raw copy of the same file {time.perf_counter() - t0:7.2f} s (I/O bound reference)")


if __name__ == "__main__":
    main()

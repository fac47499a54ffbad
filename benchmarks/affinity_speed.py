"""Time for the affinity matrix of 300 class averages of box 256 on CPU, for the superclasses, and
to rebalance 10^6 particles. Synthetic inputs; prints figures, asserts nothing.

    python benchmarks/affinity_speed.py [--classes 300] [--box 256] [--particles 1000000]
                                        [--superclasses 10] [--repeats 3]
"""
import argparse
import time

import numpy as np

from classranker_plugin.affinity import affinity_matrix
from classranker_plugin.rebalance import rebalance_particles, superclasses


def synthetic_classes(n: int, box: int, seed: int = 0) -> np.ndarray:
    """n noisy class averages: random blobs of Gaussians inside the particle circle."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:box, :box] - box / 2
    stack = np.empty((n, box, box), np.float32)
    for i in range(n):
        image = rng.normal(0, 0.2, (box, box))
        for cy, cx, s in zip(*rng.uniform(-0.15, 0.15, (2, 4)) * box, rng.uniform(0.03, 0.08, 4) * box):
            image += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))
        stack[i] = image
    return stack


def best_of(repeats: int, function, *args, **kwargs):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=300)
    parser.add_argument("--box", type=int, default=256)
    parser.add_argument("--particles", type=int, default=1_000_000)
    parser.add_argument("--superclasses", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    images = synthetic_classes(args.classes, args.box)
    seconds, affinity = best_of(args.repeats, affinity_matrix, images)
    print(f"affinity matrix, {args.classes} classes of box {args.box}: {seconds:.2f} s "
          f"(best of {args.repeats})")
    seconds, labels = best_of(args.repeats, superclasses, affinity, args.superclasses)
    print(f"{args.superclasses} superclasses of {args.classes} classes: {seconds:.2f} s")

    rng = np.random.default_rng(1)
    class_of_particle = rng.integers(1, args.classes + 1, args.particles)
    for factor in (0.5, 1.0):
        seconds, keep = best_of(args.repeats, rebalance_particles, class_of_particle, labels, factor)
        print(f"rebalance {args.particles} particles, factor {factor}: {seconds:.3f} s "
              f"({int(keep.sum())} kept)")


if __name__ == "__main__":
    main()

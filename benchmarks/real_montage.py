"""Render montages of real 2D class averages for labelling by eye.

    python benchmarks/real_montage.py STACK.mrcs [--model run_itNNN_model.star] [--out DIR]
        [--per-page 30] [--tile 1.9] [--invert] [--classes 3,7,12] [--prefix montage]

Each tile is one class average (1-based class number in stack order, as RELION numbers them),
titled with the class number and, where a model.star is given, the class distribution (%) and the
estimated resolution (A). Contrast per image: clipped to its 1st-99th percentile. --invert flips the
display only (use it for stacks that store protein black, so protein shows white). No model scores
are shown. --classes renders only the listed classes, bigger (for a second look at boundary ones).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np


def read_stack(path):
    import mrcfile
    with mrcfile.open(path, permissive=True) as mrc:
        data = np.asarray(mrc.data, dtype=np.float32)
    if data.ndim == 2:
        data = data[None]
    return data


def read_model(path):
    """Per-class distribution and resolution from a RELION model.star (None where absent)."""
    import starfile
    blocks = starfile.read(path, always_dict=True)
    table = blocks.get("model_classes")
    if table is None:
        return None, None
    dist = table["rlnClassDistribution"].to_numpy(float) if "rlnClassDistribution" in table else None
    res = table["rlnEstimatedResolution"].to_numpy(float) if "rlnEstimatedResolution" in table else None
    return dist, res


def display(img, invert=False):
    lo, hi = np.percentile(img, [1, 99])
    if hi <= lo:
        hi = lo + 1e-6
    out = np.clip((img - lo) / (hi - lo), 0, 1)
    return 1 - out if invert else out


def title(k, dist, res):
    parts = [f"#{k + 1}"]
    if dist is not None:
        parts.append(f"{100 * dist[k]:.2f}%")
    if res is not None and np.isfinite(res[k]):
        parts.append(f"{res[k]:.0f}A" if res[k] < 900 else "res>900")
    return " ".join(parts)


def render(stack, indices, out, dist=None, res=None, invert=False, tile=1.9, ncols=6):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    nrows = max(1, math.ceil(len(indices) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * tile, nrows * (tile + 0.25)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), indices):
        ax.imshow(display(stack[k], invert), cmap="gray", interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(title(k, dist, res), fontsize=8)
    fig.tight_layout(pad=0.3)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stack")
    ap.add_argument("--model")
    ap.add_argument("--out")
    ap.add_argument("--per-page", type=int, default=30)
    ap.add_argument("--tile", type=float, default=1.9, help="inches per tile at 100 dpi")
    ap.add_argument("--invert", action="store_true")
    ap.add_argument("--classes", help="1-based class numbers, comma separated: render these bigger")
    ap.add_argument("--prefix", default="montage")
    args = ap.parse_args(argv)
    stack = read_stack(args.stack)
    dist, res = read_model(args.model) if args.model else (None, None)
    out = Path(args.out or Path(args.stack).parent)
    out.mkdir(parents=True, exist_ok=True)
    if args.classes:
        idx = [int(c) - 1 for c in args.classes.split(",") if c.strip()]
        for p in range(0, len(idx), 12):
            name = out / f"{args.prefix}_zoom_{p // 12 + 1}.png"
            render(stack, idx[p:p + 12], name, dist, res, args.invert, tile=3.2, ncols=4)
            print(name)
        return
    n = len(stack)
    for p in range(0, n, args.per_page):
        idx = list(range(p, min(n, p + args.per_page)))
        name = out / f"{args.prefix}_{p + 1:03d}-{idx[-1] + 1:03d}.png"
        render(stack, idx, name, dist, res, args.invert, tile=args.tile)
        print(name)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Cut a rendered gallery of 2D class averages (a PNG screenshot/figure) into a stack.

Tiles are found from the separator lines of the gallery (rows/columns that are almost
entirely one colour, white or black), or given explicitly.  Each tile is converted to
grey (mean of RGB), cropped to its central fraction (to drop overlaid text, scale bars,
grade letters) and written as float32 .mrcs in gallery order (row-major), which is the
class order used in labels.csv (1-based).

usage: python benchmarks/real_gallery_tiles.py PNG OUT.mrcs [--crop 0.15] [--sep white|black] [--thr 0.9]
       [--rows y0,y1 y0,y1 ...] [--cols x0,x1 ...] [--n N] [--pad-to SIZE]
"""
import argparse
import json
import sys

import matplotlib.image as mpimg
import mrcfile
import numpy as np


def runs(mask):
    idx = np.where(mask)[0]
    if idx.size == 0:
        return []
    out, s, p = [], idx[0], idx[0]
    for i in idx[1:]:
        if i != p + 1:
            out.append((s, p))
            s = i
        p = i
    out.append((s, p))
    return out


def spans_between(seps, n):
    """tile spans between separator runs (including image borders)."""
    edges = []
    prev = -1
    for s, e in seps:
        if s - prev > 20:
            edges.append((prev + 1, s - 1))
        prev = e
    if n - 1 - prev > 20:
        edges.append((prev + 1, n - 1))
    return edges


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("png")
    ap.add_argument("out")
    ap.add_argument("--crop", type=float, default=0.15, help="fraction cut from each side")
    ap.add_argument("--crop-top", type=float, default=None)
    ap.add_argument("--crop-bottom", type=float, default=None)
    ap.add_argument("--sep", default="white")
    ap.add_argument("--thr", type=float, default=0.9)
    ap.add_argument("--rows", nargs="*")
    ap.add_argument("--cols", nargs="*")
    ap.add_argument("--n", type=int, default=None, help="keep the first N tiles")
    ap.add_argument("--size", type=int, default=None, help="resample every tile to SIZE px")
    a = ap.parse_args()

    im = mpimg.imread(a.png).astype(np.float32)
    if im.max() > 1.5:
        im /= 255.0
    g = im[..., :3].mean(-1) if im.ndim == 3 else im
    if a.sep == "white":
        sepmask = g > 0.97
    else:
        sepmask = g < 0.03
    if a.rows:
        rows = [tuple(int(v) for v in r.split(",")) for r in a.rows]
    else:
        rows = spans_between(runs(sepmask.mean(1) > a.thr), g.shape[0])
    if a.cols:
        cols = [tuple(int(v) for v in c.split(",")) for c in a.cols]
    else:
        cols = spans_between(runs(sepmask.mean(0) > a.thr), g.shape[1])
    ct = a.crop if a.crop_top is None else a.crop_top
    cb = a.crop if a.crop_bottom is None else a.crop_bottom
    tiles = []
    for (y0, y1) in rows:
        for (x0, x1) in cols:
            h, w = y1 - y0 + 1, x1 - x0 + 1
            s = min(h, w)
            yy0 = y0 + int(round(ct * s)); yy1 = y0 + h - int(round(cb * s))
            xx0 = x0 + int(round(a.crop * s)); xx1 = x0 + w - int(round(a.crop * s))
            t = g[yy0:yy1, xx0:xx1]
            m = min(t.shape)
            t = t[:m, :m]
            tiles.append(t)
    if a.n:
        tiles = tiles[: a.n]
    m = min(min(t.shape) for t in tiles) if a.size is None else a.size
    out = []
    for t in tiles:
        if t.shape[0] != m:
            # nearest-neighbour resample to a common size
            yi = (np.arange(m) * t.shape[0] / m).astype(int)
            t = t[yi][:, yi]
        out.append(t)
    stack = np.stack(out).astype(np.float32)
    with mrcfile.new(a.out, overwrite=True) as mrc:
        mrc.set_data(stack)
    json.dump({"rows": rows, "cols": cols, "crop": a.crop, "crop_top": ct, "crop_bottom": cb,
               "n": len(out), "tile_px": int(m)}, sys.stdout, default=int)
    print()


if __name__ == "__main__":
    main()

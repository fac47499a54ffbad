"""Cut a relion_display screenshot (regular grid of class-average tiles) into an .mrcs stack.

Tiles are read row-major. A tile whose frame is red was selected in the display (author selection).
Grey = mean of RGB, stored as float32 0..255 (display-scaled, 8-bit: NOT the original densities).
"""
import json
import sys

import mrcfile
import numpy as np
from PIL import Image


def crop(png, x0, y0, pitch_x, pitch_y, ncols, nrows, n, inset=7, tile=None):
    a = np.asarray(Image.open(png).convert("RGB")).astype(np.float32)
    tile = tile or min(pitch_x, pitch_y) - 2
    imgs, selected = [], []
    for k in range(n):
        r, c = divmod(k, ncols)
        xa, ya = x0 + c * pitch_x, y0 + r * pitch_y
        t = a[ya:ya + tile, xa:xa + tile]
        frame = np.concatenate([t[1:4, :].reshape(-1, 3), t[-4:-1, :].reshape(-1, 3),
                                t[:, 1:4].reshape(-1, 3), t[:, -4:-1].reshape(-1, 3)])
        red = ((frame[:, 0] > 180) & (frame[:, 1] < 80) & (frame[:, 2] < 80)).mean()
        selected.append(bool(red > 0.3))
        inner = t[inset:tile - inset, inset:tile - inset].mean(-1)
        s = min(inner.shape)
        imgs.append(inner[:s, :s])
    return np.stack(imgs).astype(np.float32), selected


def write(stack, out):
    with mrcfile.new(out, overwrite=True) as m:
        m.set_data(stack)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    out = spec.pop("out")
    stack, sel = crop(**spec)
    write(stack, out)
    print(stack.shape, "selected (1-based):", [i + 1 for i, s in enumerate(sel) if s])

# Example (the xtreme-d job023 screenshot: tiles at x0=3, y0=77, pitch 136 px, 15 per row):
#   python benchmarks/real_screenshot_tiles.py '{"png": "relion_good_classes.png", "x0": 3, "y0": 77,
#       "pitch_x": 136, "pitch_y": 136, "ncols": 15, "nrows": 7, "n": 100, "out": "display_classes.mrcs"}'

#!/usr/bin/env python
"""Remove bright overlay marks (scale bar / its label) from chosen tiles of a stack:
pixels brighter than THR inside the box x0<x<x1 (fractions of the tile width) are
dilated by D px and filled by iterated averaging of their unmasked neighbours.
usage: inpaint_overlay.py STACK.mrcs TILES(1-based, comma) X0 X1 [THR] [D]"""
import sys
import mrcfile
import numpy as np

path, tiles, x0, x1 = sys.argv[1], [int(t) for t in sys.argv[2].split(',')], float(sys.argv[3]), float(sys.argv[4])
thr = float(sys.argv[5]) if len(sys.argv) > 5 else 0.9
dil = int(sys.argv[6]) if len(sys.argv) > 6 else 3
with mrcfile.open(path, mode='r+') as m:
    d = m.data.copy()
    for t in tiles:
        im = d[t - 1]
        h, w = im.shape
        box = np.zeros_like(im, bool)
        box[:, int(x0 * w):int(x1 * w)] = True
        mask = (im > thr) & box
        for _ in range(dil):
            mm = mask.copy()
            mm[1:] |= mask[:-1]; mm[:-1] |= mask[1:]; mm[:, 1:] |= mask[:, :-1]; mm[:, :-1] |= mask[:, 1:]
            mask = mm & box
        filled = im.copy()
        known = ~mask
        for _ in range(200):
            if known.all():
                break
            acc = np.zeros_like(im); cnt = np.zeros_like(im)
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                sh = np.roll(filled * known, (dy, dx), (0, 1)); sk = np.roll(known, (dy, dx), (0, 1))
                acc += sh; cnt += sk
            new = (~known) & (cnt > 0)
            filled[new] = acc[new] / cnt[new]
            known = known | new
        print(t, int(mask.sum()), 'px filled')
        d[t - 1] = filled
    m.set_data(d)

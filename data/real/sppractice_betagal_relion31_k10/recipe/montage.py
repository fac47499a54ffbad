"""Render class averages as labelled montages for visual labelling (written for this project).
usage: montage.py classes.mrcs model.star outprefix [--per 30] [--cols 6] [--tile 1.9] [--only 3,5,7] [--invert]"""
import sys, argparse, numpy as np, mrcfile, starfile, matplotlib
matplotlib.use('Agg'); import matplotlib.pyplot as plt
p = argparse.ArgumentParser(); p.add_argument('classes'); p.add_argument('model'); p.add_argument('out')
p.add_argument('--per', type=int, default=30); p.add_argument('--cols', type=int, default=6)
p.add_argument('--tile', type=float, default=1.9); p.add_argument('--only', default=None); p.add_argument('--invert', action='store_true')
a = p.parse_args()
with mrcfile.open(a.classes, permissive=True) as m: st = np.asarray(m.data, dtype=np.float32)
if st.ndim == 2: st = st[None]
dist = res = None
if a.model != 'none':
    mc = starfile.read(a.model, always_dict=True)['model_classes']
    dist = mc['rlnClassDistribution'].values; res = mc['rlnEstimatedResolution'].values
idx = list(range(len(st))) if a.only is None else [int(x) - 1 for x in a.only.split(',')]
for page in range(0, len(idx), a.per):
    sub = idx[page:page + a.per]; cols = min(a.cols, len(sub)); rows = (len(sub) + cols - 1) // cols
    fig, axs = plt.subplots(rows, cols, figsize=(cols * a.tile, rows * (a.tile + 0.3)), squeeze=False)
    for ax in axs.flat: ax.axis('off')
    for ax, i in zip(axs.flat, sub):
        im = -st[i] if a.invert else st[i]
        lo, hi = np.percentile(im, 1), np.percentile(im, 99)
        if hi <= lo: hi = lo + 1e-6
        ax.imshow(np.clip(im, lo, hi), cmap='gray', vmin=lo, vmax=hi, interpolation='bilinear')
        t = '#%d' % (i + 1)
        if dist is not None: t += ' %.1f%% %.0fA' % (100 * dist[i], res[i])
        ax.set_title(t, fontsize=9)
    plt.tight_layout(pad=0.3)
    fn = '%s_p%d.png' % (a.out, page // a.per + 1); plt.savefig(fn, dpi=100); plt.close(fig); print(fn)

"""Convert a RELION particle set (any star version, float16 stacks allowed) into one float32
stack + RELION-3.1 star that relion_refine 3.1.3 can read. Written for this project."""
import sys, os, numpy as np, mrcfile, starfile, pandas as pd
src_star, root, out_prefix = sys.argv[1], sys.argv[2], sys.argv[3]
d = starfile.read(src_star, always_dict=True)
optics = d['optics'].copy(); parts = d['particles'].copy()
imgs = []
cache = {}
for name in parts['rlnImageName']:
    idx, fn = name.split('@'); idx = int(idx) - 1
    if fn not in cache:
        with mrcfile.open(os.path.join(root, fn), permissive=True) as m:
            cache[fn] = np.asarray(m.data, dtype=np.float32)
    a = cache[fn]
    imgs.append(a[idx] if a.ndim == 3 else a)
stack = np.stack(imgs).astype(np.float32)
apix = float(optics['rlnImagePixelSize'].iloc[0])
with mrcfile.new(out_prefix + '.mrcs', overwrite=True) as m:
    m.set_data(stack); m.voxel_size = apix
parts['rlnImageOriginalName'] = parts['rlnImageName']
base = os.path.basename(out_prefix) + '.mrcs'
parts['rlnImageName'] = ['%06d@%s' % (i + 1, base) for i in range(len(parts))]
keep_opt = [c for c in optics.columns if c in ('rlnOpticsGroupName','rlnOpticsGroup','rlnVoltage','rlnSphericalAberration',
            'rlnAmplitudeContrast','rlnImagePixelSize','rlnImageSize','rlnImageDimensionality','rlnCtfDataAreCtfPremultiplied','rlnMicrographOriginalPixelSize')]
drop = [c for c in parts.columns if c in ('rlnClassNumber','rlnAnglePsi','rlnAngleRot','rlnAngleTilt','rlnOriginXAngst','rlnOriginYAngst','rlnNormCorrection','rlnLogLikeliContribution','rlnMaxValueProbDistribution','rlnNrOfSignificantSamples','rlnGroupNumber')]
parts = parts.drop(columns=drop)
starfile.write({'optics': optics[keep_opt], 'particles': parts}, out_prefix + '.star', overwrite=True)
print(stack.shape, apix, stack.mean(), stack.std())

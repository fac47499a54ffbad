"""Build tests/data/feature_reference.npz: a small simulated job's averages (float16) and the feature
vectors / model images this version of the code computes for them. The committed file was made by
the code before the fast resampling / feature path (commit 2f8837f): test_features.py checks that
the fast path still gives those values.

    python tests/data/make_feature_reference.py tests/data/feature_reference.npz
"""
import sys, tempfile
from pathlib import Path
import numpy as np
import pandas as pd
import classranker_plugin

from classranker_plugin.classset import ClassSet
from classranker_plugin.features import compute_features
from classranker_plugin.preprocess import model_images, relion_model_images
from classranker_plugin.simulation import simulate_job
from classranker_plugin.io import read_classes

with tempfile.TemporaryDirectory() as tmp:
    job = simulate_job(Path(tmp) / "job", n_classes=22, box=64, pixel_size=3.5, n_particles=3000, seed=7)
    c = read_classes(next(Path(job).glob("*_model.star")), with_particles=False)
images = np.asarray(c.images, np.float32)
images[20] = 0.0          # an empty class as RELION writes it
images[21] = 2.5          # a constant one
images16 = images.astype(np.float16)
images = images16.astype(np.float32)
table = c.table[["class_number", "class_distribution", "accuracy_rotations", "accuracy_translations",
                 "resolution", "particle_count"]].copy()
print(c.pixel_size, c.particle_diameter)
SETTINGS = {"job": (3.5, float(c.particle_diameter)), "small_particle": (3.5, 90.0), "no_diameter": (3.5, None),
            "no_metadata": (None, None)}
n = np.arange(64 * 64)
projection = np.stack([np.cos(2 * np.pi * ((k + 1) * 0.6180339887 * n % 1.0)) for k in range(16)], axis=1)
out = {"images": images16}
for col in table.columns:
    out[f"table/{col}"] = table[col].to_numpy(np.float64)
for name, (apix, diameter) in SETTINGS.items():
    cs = ClassSet(images, table.copy(), pixel_size=apix, particle_diameter=diameter)
    out[f"{name}/features"] = compute_features(cs).values
    mi = model_images(cs)
    out[f"{name}/model_images_projected"] = mi.reshape(len(mi), -1).astype(np.float64) @ projection
    if name == "job":
        out[f"{name}/model_images_first"] = mi[:2]
    if apix:
        out[f"{name}/relion_features"] = compute_features(cs, "relion").values
        ri = relion_model_images(cs)
        out[f"{name}/relion_images_projected"] = ri.reshape(len(ri), -1).astype(np.float64) @ projection
np.savez_compressed(sys.argv[1], **out)
print({k: v.shape for k, v in out.items()})

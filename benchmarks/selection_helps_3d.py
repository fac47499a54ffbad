"""Does class selection help 3D? Reconstruct a RELION-engine job's particles with relion_reconstruct.

For a single-map job made by ``simulate_relion_job`` (the truth map is maps/map01.mrc), particles get
their true orientations (junk particles random ones, as they would have no consistent view) and are
reconstructed from: all particles, ClassRanker's selection (needs a model), the classes the truth
labels call good (a perfect class ranker), and the truly good particles. Each map is compared with
the truth map: correlation inside the particle sphere and the FSC 0.5 resolution.

    python benchmarks/selection_helps_3d.py --job scratch/sel3d --make   # makes the job first
    python benchmarks/selection_helps_3d.py --job scratch/sel3d_ring --make --map generated:ring   # held-out family
    python benchmarks/selection_helps_3d.py --job scratch/relion_corpus/job004 --model m.pt
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MAPS = REPO.parent / "shared" / "data" / "relion30_tutorial_betagal" / "maps"
DEFAULT_MAP = MAPS / "Refine3D_job027_run_class001.mrc"


def particles_with_true_angles(job: Path, data_star: Path) -> tuple:
    """(optics, particles) of the Class2D output with true 3D angles/origins and a 'good' column."""
    blocks = starfile.read(data_star, always_dict=True)
    particles = blocks["particles"].copy()
    truth = pd.read_csv(job / "particle_truth.csv")
    stars = sorted((job / "Particles").glob("good??.star"))
    angles = pd.concat([starfile.read(p, always_dict=True)["particles"] for p in stars])
    angles = angles[["rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
                     "rlnOriginXAngst", "rlnOriginYAngst"]]
    particles = particles.drop(columns=[c for c in angles.columns if c != "rlnImageName" and c in particles.columns])
    particles = particles.merge(angles, on="rlnImageName", how="left").merge(truth[["rlnImageName", "good"]],
                                                                              on="rlnImageName")
    junk = particles["rlnAngleRot"].isna().to_numpy()
    rng = np.random.default_rng(0)
    particles.loc[junk, "rlnAngleRot"] = rng.uniform(-180, 180, junk.sum())
    particles.loc[junk, "rlnAngleTilt"] = np.rad2deg(np.arccos(rng.uniform(-1, 1, junk.sum())))
    particles.loc[junk, "rlnAnglePsi"] = rng.uniform(-180, 180, junk.sum())
    particles.loc[junk, ["rlnOriginXAngst", "rlnOriginYAngst"]] = 0.0
    return blocks["optics"], particles


def reconstruct(job: Path, optics, particles, name: str, out: Path, ctf: bool) -> Path:
    star = out / f"{name}.star"
    starfile.write({"optics": optics, "particles": particles.drop(columns=["good"])}, star, overwrite=True)
    command = ["relion_reconstruct", "--i", str(star.resolve()), "--o", str((out / f"{name}.mrc").resolve()),
               "--j", "1"]
    if ctf:
        command.append("--ctf")
    subprocess.run(command, cwd=job, check=True, capture_output=True)
    return out / f"{name}.mrc"


def compare(map_path: Path, truth: np.ndarray, pixel_size: float, radius_px: float) -> dict:
    volume = mrcfile.read(map_path).astype(np.float64)
    box = truth.shape[0]
    z, y, x = np.indices(truth.shape) - box // 2
    inside = np.sqrt(x * x + y * y + z * z) <= radius_px
    correlation = float(np.corrcoef(volume[inside], truth[inside])[0, 1])
    f1, f2 = np.fft.fftn(volume * inside), np.fft.fftn(truth * inside)
    k = np.fft.fftfreq(box)
    shells = np.round(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2) * box).astype(int)
    fsc = []
    for s in range(1, box // 2):
        ring = shells == s
        num = np.real(np.sum(f1[ring] * np.conj(f2[ring])))
        fsc.append(num / np.sqrt(np.sum(np.abs(f1[ring]) ** 2) * np.sum(np.abs(f2[ring]) ** 2)))
    fsc = np.array(fsc)
    below = np.flatnonzero(fsc < 0.5)
    shell = (below[0] + 1) if len(below) else box // 2
    return {"correlation": round(correlation, 4), "fsc05_resolution_A": round(box * pixel_size / shell, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", required=True, help="a single-map RELION-engine job folder")
    parser.add_argument("--make", action="store_true", help="make the job first (one real map, 40%% junk)")
    parser.add_argument("--map", default=str(DEFAULT_MAP),
                        help="the map for --make (default: shared beta-gal; generated:ring is the corpus's held-out family)")
    parser.add_argument("--model", help="ClassRanker checkpoint (default: the bundled model when present)")
    parser.add_argument("--cutoff", type=float, default=0.5)
    args = parser.parse_args(argv)
    job = Path(args.job).resolve()
    if args.make:
        from classranker_plugin.simulation.relion_engine import simulate_relion_job
        maps = [args.map] if Path(args.map).is_file() or args.map.startswith("generated") else ["generated:globular"]
        simulate_relion_job(job, maps=maps, n_particles=700, junk_fraction=0.4, box=48, pixel_size=7.0, snr=0.1,
                            K=10, iterations=8, seed=11, threads=1, overwrite=True)
    info = json.loads((job / "simulation.json").read_text())
    if len(info["maps"]) != 1:
        raise SystemExit(f"{job}: needs a single-map job, this one has {len(info['maps'])} maps")
    data_star = sorted(job.glob("run_it*_data.star"))[-1]
    optics, particles = particles_with_true_angles(job, data_star)
    truth_labels = pd.read_csv(job / "truth.csv")
    subsets = {"all particles": np.ones(len(particles), bool),
               "truth-good classes": particles["rlnClassNumber"].isin(
                   truth_labels.loc[truth_labels["label"] == 1, "class_number"]).to_numpy(),
               "truly good particles": particles["good"].to_numpy(bool)}
    try:
        from classranker_plugin.checkpoint import load_model
        from classranker_plugin.io import read_classes
        from classranker_plugin.scoring import score_classes, select_classes
        classes = read_classes(data_star)
        result = score_classes(classes, load_model(args.model, device="cpu"), device="cpu", explain=False)
        keep = select_classes(result.scores, classes.stat("particle_count"), cutoff=args.cutoff, empty=result.empty)
        subsets["ClassRanker selection"] = particles["rlnClassNumber"].isin(classes.class_numbers[keep]).to_numpy()
    except Exception as error:  # no model yet: report the other arms
        print(f"ClassRanker arm skipped: {error}", file=sys.stderr)
    out = job / "selection_3d"
    out.mkdir(exist_ok=True)
    truth_map = mrcfile.read(job / "maps" / "map01.mrc").astype(np.float64)
    radius = 0.5 * info["particle_diameter"] / info["pixel_size"]
    rows = []
    for name, mask in subsets.items():
        chosen = particles[mask]
        if len(chosen) < 10:  # relion_reconstruct crashes on an empty STAR
            rows.append({"subset": name, "particles": int(mask.sum()), "junk_fraction": float("nan"),
                         "correlation": float("nan"), "fsc05_resolution_A": float("nan")})
            continue
        map_path = reconstruct(job, optics, chosen, name.replace(" ", "_"), out, info["parameters"]["ctf"])
        stats = compare(map_path, truth_map, info["pixel_size"], radius)
        rows.append({"subset": name, "particles": int(mask.sum()),
                     "junk_fraction": round(1 - chosen["good"].mean(), 3), **stats})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    table.to_csv(out / "selection_3d.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

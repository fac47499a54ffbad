"""Labels of RELION-made classes from their composition (which particles each class holds).

Every particle's origin is known (the map it was projected from, or the junk kind our code drew), so
a class's score is the fraction of its particles that are good and centred; its label is
score >= 0.5 and its kind is its dominant origin. Classes RELION left empty get score 0, kind
"empty_class".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import starfile

TRUTH_COLUMNS = ("class_number", "label", "kind", "score", "n_particles", "purity", "family")
TRAINING_STAR = "classranker_training.star"


def class_composition(assignments: pd.DataFrame, particle_truth: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """truth.csv table from ``assignments`` (rlnImageName, rlnClassNumber) and ``particle_truth``
    (rlnImageName, origin, family, good)."""
    merged = assignments[["rlnImageName", "rlnClassNumber"]].merge(particle_truth, on="rlnImageName",
                                                                   how="left", validate="one_to_one")
    if merged["origin"].isna().any():
        missing = merged.loc[merged["origin"].isna(), "rlnImageName"].iloc[0]
        raise ValueError(f"particle {missing} of the Class2D output is not in the truth table")
    rows = []
    groups = dict(tuple(merged.groupby("rlnClassNumber")))
    for number in range(1, n_classes + 1):
        members = groups.get(number)
        if members is None or len(members) == 0:
            rows.append((number, 0, "empty_class", 0.0, 0, 1.0, "empty_class"))
            continue
        score = float(members["good"].astype(float).mean())
        counts = members["origin"].value_counts()
        kind = str(counts.index[0])
        family = str(members.loc[members["origin"] == kind, "family"].iloc[0])
        rows.append((number, int(score >= 0.5), kind, round(score, 4), len(members),
                     round(float(counts.iloc[0] / len(members)), 4), family))
    return pd.DataFrame(rows, columns=list(TRUTH_COLUMNS))


def write_truth(path: Path, truth: pd.DataFrame) -> Path:
    tmp = Path(path).with_suffix(".csv.tmp")
    truth.to_csv(tmp, index=False)
    tmp.replace(path)
    return Path(path)


def write_training_star(path: Path, truth: pd.DataFrame, classes_file: str) -> Path:
    """RELION's training-format STAR: rlnReferenceImage (index@stack, relative to the STAR), rlnClassScore."""
    table = pd.DataFrame({
        "rlnClassNumber": truth["class_number"].to_numpy(int),
        "rlnReferenceImage": [f"{n:06d}@{classes_file}" for n in truth["class_number"]],
        "rlnClassScore": truth["score"].to_numpy(float),
        "rlnClassDistribution": truth["n_particles"].to_numpy(float) / max(1, truth["n_particles"].sum()),
    })
    starfile.write({"class_scores": table}, path, overwrite=True)
    return Path(path)

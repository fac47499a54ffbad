"""Outputs of a selection protocol: apply the cutoff to a scores file and create the Scipion sets.

Shared by "auto-select 2D classes" (scores just computed) and "change cutoff" (scores of a previous
run, no re-scoring). Everything here is recomputed from the scores file, so re-running the output
step (Scipion "continue") gives the same outputs, replacing the old ones instead of duplicating.
"""
import json
import os

import numpy as np
from pyworkflow.object import Float, String

from .convert import SCORE_ATTR, classes_to_classset, read_scores
from .subset import create_subset_outputs

KEPT = ("outputClasses", "outputParticles")
REJECTED = ("outputClassesRejected", "outputParticlesRejected")
SELECTION_FILE = "selection.json"
REASON_ATTR = "_classranker_reason"


def select_from_scores(frame, cutoff, min_classes=0, min_particles=0):
    """Boolean mask of the classes to keep (the engine's rule: cutoff, minimums, never empty)."""
    from .scoring import select_classes

    return select_classes(frame["score"].to_numpy(float), frame["particle_count"].to_numpy(float),
                          cutoff, min_classes=min_classes, min_particles=min_particles,
                          empty=frame["empty"].to_numpy(bool))


def remove_outputs(protocol, names):
    """Delete outputs (objects and files) left by an earlier run of the step."""
    for name in names:
        if protocol.hasAttribute(name):
            output = getattr(protocol, name)
            path = output.getFileName() if hasattr(output, "getFileName") else None
            if hasattr(output, "close"):
                output.close()
            protocol.deleteOutput(output)
            if path and os.path.exists(path):
                os.remove(path)


def define_selection_outputs(protocol, in_classes, scores_file, cutoff, min_classes=0,
                             min_particles=0, write_rejected=False):
    """Select, create and define the outputs; write selection.json and the PNG plots in extra."""
    frame = read_scores(scores_file)
    kept = select_from_scores(frame, cutoff, min_classes, min_particles)
    ids = frame["class_id"].to_numpy(int)
    scores = dict(zip(ids.tolist(), frame["score"].astype(float).tolist()))
    explanations = dict(zip(ids.tolist(), frame["explanation"].tolist()))
    remove_outputs(protocol, KEPT + REJECTED)

    def update(cls):  # score and one-line reason, visible as columns in Scipion's table views
        setattr(cls, SCORE_ATTR, Float(scores[cls.getObjId()]))
        setattr(cls, REASON_ATTR, String(explanations[cls.getObjId()]))

    groups = [(KEPT, ids[kept], "")]
    if write_rejected:
        groups.append((REJECTED, ids[~kept], "_rejected"))
    for (classes_name, particles_name), group_ids, suffix in groups:
        if len(group_ids) == 0:
            continue
        classes, particles = create_subset_outputs(protocol, in_classes, group_ids, update,
                                                   particles_name, suffix=suffix)
        protocol._defineOutputs(**{particles_name: particles, classes_name: classes})
        protocol._defineSourceRelation(in_classes, classes)
        protocol._defineSourceRelation(in_classes, particles)
    counts = frame["particle_count"].to_numpy(float)
    summary = {"cutoff": float(cutoff), "min_classes": int(min_classes),
               "min_particles": int(min_particles), "classes": int(len(kept)),
               "classes_kept": int(kept.sum()), "particles": int(np.nansum(counts)),
               "particles_kept": int(np.nansum(counts[kept])), "kept_ids": ids[kept].tolist()}
    with open(protocol._getExtraPath(SELECTION_FILE), "w") as handle:
        json.dump(summary, handle, indent=2)
    try:
        from .viewers.plots import save_selection_plots

        classset, class_ids = classes_to_classset(in_classes)
        order = [class_ids.index(i) for i in ids]
        save_selection_plots(protocol._getExtraPath(), classset.images[order], ids,
                             frame["score"].to_numpy(float), kept, cutoff)
    except Exception as error:  # plots are a convenience: never fail the outputs for them
        protocol.warning(f"could not draw the selection plots: {error}")
    protocol.info("Kept %(classes_kept)d of %(classes)d classes, %(particles_kept)d of "
                  "%(particles)d particles" % summary)
    return summary


def read_extra_json(protocol, name):
    """A JSON file of the protocol's extra folder (None if absent)."""
    path = protocol._getExtraPath(name)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def read_selection(protocol):
    """selection.json of a finished selection protocol (None if absent)."""
    return read_extra_json(protocol, SELECTION_FILE)


__all__ = ["SCORE_ATTR", "define_selection_outputs", "read_extra_json", "read_selection", "remove_outputs",
           "select_from_scores"]

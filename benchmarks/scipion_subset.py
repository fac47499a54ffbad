"""Particle subset of the kept classes: ClassRanker's SQL copy vs Scipion's own subset creation.

Builds a SetOfClasses2D of N particles (CTF + 2D alignment, like a RELION Class2D import) in a
temporary folder, then keeps half of the classes in two ways, on the same input:
  scipion:     SetOfClasses2D.appendFromClasses(filter) + SetOfParticles.appendFromClasses
               (what scipion-em-relion's class ranker protocol and most subset protocols do)
  classranker: classranker_plugin.subset.subset_classes + subset_particles (SQL bulk copy)
and checks that both give the same classes, particle ids, CTFs and transforms. Prints the times
and the ratio. Then the rebalance protocol's copy (a random half of all particles, by id):
  per particle: iterItems over every class, clone + append the kept ones (the protocol's first version)
  classranker:  classranker_plugin.subset.copy_particles (one SQL copy through a temporary id table) No display, no network; needs scipion-pyworkflow and scipion-em.

    python benchmarks/scipion_subset.py [--particles 100000] [--classes 100] [--keep 0.5]
"""
import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import scipion_env  # noqa: E402  (must configure Scipion before pyworkflow is imported)


def build_input(folder, n_particles, n_classes, seed=0):
    import numpy as np
    from pwem.convert.transformations import euler_matrix
    from pwem.objects import CTFModel, Particle, SetOfClasses2D, SetOfParticles, Transform
    from pyworkflow.object import Float, Pointer

    rng = np.random.default_rng(seed)
    parts = SetOfParticles(filename=os.path.join(folder, "particles.sqlite"))
    parts.setSamplingRate(1.5)
    parts.setHasCTF(True)
    parts.setAlignment2D()
    classes_of = rng.integers(1, n_classes + 1, n_particles)
    for i in range(n_particles):
        p = Particle(location=(i % 5000 + 1, "Extract/job005/mic%04d.mrcs" % (i // 5000)))
        ctf = CTFModel()
        ctf.setStandardDefocus(float(rng.uniform(8000, 30000)), float(rng.uniform(8000, 30000)),
                               float(rng.uniform(0, 180)))
        p.setCTF(ctf)
        m = euler_matrix(0, 0, math.radians(float(rng.uniform(-180, 180))), "szyz")
        m[:2, 3] = rng.normal(0, 3, 2)
        p.setTransform(Transform(m))
        p.setClassId(int(classes_of[i]))
        p.setObjId(i + 1)
        parts.append(p)
    parts.write()
    classes = SetOfClasses2D(filename=os.path.join(folder, "classes2D.sqlite"))
    classes.setImages(Pointer(parts))

    def update_class(cls):
        cls.getRepresentative().setLocation(cls.getObjId(), "class_averages.mrcs")
        cls.setAlignment2D()
        cls._rlnClassDistribution = Float(float(np.mean(classes_of == cls.getObjId())))

    classes.classifyItems(updateClassCallback=update_class)
    classes.write()
    return parts, classes


def scipion_subset(folder, in_parts, in_classes, keep):
    from pwem.objects import SetOfClasses2D, SetOfParticles
    from pyworkflow.object import Float

    out_classes = SetOfClasses2D(filename=os.path.join(folder, "scipion_classes2D.sqlite"))
    out_classes.copyInfo(in_classes)

    def update(cls):
        cls._classranker_score = Float(0.9)

    out_classes.appendFromClasses(in_classes, filterClassFunc=lambda c: c.getObjId() in keep,
                                  updateClassCallback=update)
    out_classes.write()
    out_parts = SetOfParticles(filename=os.path.join(folder, "scipion_particles.sqlite"))
    out_parts.copyInfo(in_parts)
    out_parts.appendFromClasses(out_classes)
    out_parts.write()
    return out_classes, out_parts


def classranker_subset(folder, in_parts, in_classes, keep):
    from pwem.objects import SetOfClasses2D, SetOfParticles
    from pyworkflow.object import Float, Pointer

    from classranker_plugin.subset import subset_classes, subset_particles

    out_parts = SetOfParticles(filename=os.path.join(folder, "cr_particles.sqlite"))
    out_parts.copyInfo(in_parts)
    out_classes = SetOfClasses2D(filename=os.path.join(folder, "cr_classes2D.sqlite"))
    out_classes.setImages(Pointer(out_parts))

    def update(cls):
        cls._classranker_score = Float(0.9)

    subset_classes(in_classes, out_classes, keep, update_class=update)
    subset_particles(out_classes, out_parts)
    return out_classes, out_parts


def rebalance_copies(folder, in_parts, in_classes, seed=1):
    """Keep a random half of the particles, by id, in the two ways; both outputs' ids and times."""
    import numpy as np
    import pandas as pd
    from pwem.objects import SetOfParticles

    from classranker_plugin.subset import copy_particles

    members = pd.DataFrame([(p.getObjId(), p.getClassId()) for p in in_parts.iterItems()],
                           columns=["particle_id", "class_id"])
    members = members[np.random.default_rng(seed).random(len(members)) < 0.5]
    outputs = {}
    for name in ("per particle", "classranker"):
        out = SetOfParticles(filename=os.path.join(folder, f"rebalance_{name.replace(' ', '_')}.sqlite"))
        out.copyInfo(in_parts)
        t0 = time.perf_counter()
        if name == "classranker":
            copy_particles(in_classes, out, members)
        else:
            keep = set(members["particle_id"].tolist())
            for cid in sorted(members["class_id"].unique()):
                for particle in in_classes[int(cid)].iterItems(orderBy="id", where="enabled=1"):
                    if particle.getObjId() in keep:
                        out.append(particle.clone())
            out.write()
        outputs[name] = (time.perf_counter() - t0, sorted(p.getObjId() for p in out.iterItems()))
    return len(members), outputs


def check_same(a_classes, a_parts, b_classes, b_parts):
    import numpy as np

    assert [c.getObjId() for c in a_classes] == [c.getObjId() for c in b_classes]
    assert [c.getSize() for c in a_classes] == [c.getSize() for c in b_classes]
    a_ids = sorted(p.getObjId() for p in a_parts.iterItems())
    b_ids = sorted(p.getObjId() for p in b_parts.iterItems())
    assert a_ids == b_ids, "different particle ids"
    sample = set(a_ids[:: max(1, len(a_ids) // 200)])
    a = {p.getObjId(): p.clone() for p in a_parts.iterItems() if p.getObjId() in sample}
    for p in b_parts.iterItems():
        if p.getObjId() in sample:
            q = a[p.getObjId()]
            assert np.allclose(p.getTransform().getMatrix(), q.getTransform().getMatrix())
            assert p.getCTF().getDefocusU() == q.getCTF().getDefocusU()
            assert p.getClassId() == q.getClassId() and p.getLocation() == q.getLocation()
    return len(a_ids)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--particles", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--keep", type=float, default=0.5, help="fraction of classes kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="classranker_bench_") as folder:
        scipion_env.configure(os.path.join(folder, "scipion"))
        import logging

        import pyworkflow as pw

        pw.Config.getDomain().getPlugins()
        logging.getLogger("pwem.objects.data").setLevel(logging.ERROR)  # "direct pointer" notes
        t0 = time.perf_counter()
        parts, classes = build_input(folder, args.particles, args.classes)
        print(f"input: {args.particles} particles in {classes.getSize()} classes, "
              f"built in {time.perf_counter() - t0:.1f} s")
        keep = set(range(1, int(args.classes * args.keep) + 1))
        t0 = time.perf_counter()
        s_classes, s_parts = scipion_subset(folder, parts, classes, keep)
        t_scipion = time.perf_counter() - t0
        t0 = time.perf_counter()
        c_classes, c_parts = classranker_subset(folder, parts, classes, keep)
        t_ours = time.perf_counter() - t0
        n = check_same(s_classes, s_parts, c_classes, c_parts)
        print(f"kept {len(keep)} classes, {n} particles (identical outputs)")
        print(f"scipion appendFromClasses: {t_scipion:8.2f} s  ({n / t_scipion:,.0f} particles/s)")
        print(f"classranker SQL copy:      {t_ours:8.2f} s  ({n / t_ours:,.0f} particles/s)")
        print(f"speed-up: {t_scipion / t_ours:.1f}x")
        n, outputs = rebalance_copies(folder, parts, classes)
        (t_loop, loop_ids), (t_sql, sql_ids) = outputs["per particle"], outputs["classranker"]
        assert loop_ids == sql_ids, "rebalance copies differ"
        print(f"rebalance copy of {n} particles by id (identical outputs):")
        print(f"per-particle clone + append: {t_loop:8.2f} s  ({n / t_loop:,.0f} particles/s)")
        print(f"classranker SQL copy:        {t_sql:8.2f} s  ({n / t_sql:,.0f} particles/s)")
        print(f"speed-up: {t_loop / t_sql:.1f}x")


if __name__ == "__main__":
    main()

"""Labels from selections made by hand in Scipion, shared by the training protocols.

A pair is (all the classes of a 2D classification, the subset of them kept by hand): kept classes
are good (1), the other classes junk (0). Scipion objects are only touched, never imported here.
"""


def class_ids(classes):
    """Ids of the enabled classes of a SetOfClasses2D (an empty set for None)."""
    if classes is None:
        return set()
    return {c.getObjId() for c in classes.iterItems() if c.isEnabled()}


def validate_pairs(allSets, keptSets):
    """Error messages (a list, empty when fine) for pairs of pointers (all classes, kept classes):
    as many kept sets as inputs, each kept set a subset (by id) of its input holding some, but not
    all, of its classes."""
    errors = []
    allSets, keptSets = list(allSets), list(keptSets)
    if not allSets:
        return ["Give the 2D classes and, for each, the classes kept by hand."]
    if len(allSets) != len(keptSets):
        errors.append("Give as many sets of kept classes as sets of all classes (same order).")
        return errors
    for i, (allPtr, keptPtr) in enumerate(zip(allSets, keptSets), 1):
        allIds, keptIds = class_ids(allPtr.get()), class_ids(keptPtr.get())
        if not keptIds <= allIds:
            errors.append("Pair %d: the kept classes %s are not among the input classes: give "
                          "a subset of the input." % (i, sorted(keptIds - allIds)[:10]))
        elif not keptIds or keptIds == allIds:
            errors.append("Pair %d: the kept set must hold some, but not all, of the classes "
                          "(training needs good and junk examples)." % i)
    return errors


def pairs_to_sources(allSets, keptSets, log=None):
    """One training.sources.ClassSetSource per pair of pointers (all classes, kept classes).
    ``log``: a function given one line per pair (e.g. a protocol's ``info``)."""
    from classranker_plugin.convert import classes_to_classset
    from classranker_plugin.training.sources import ClassSetSource

    sources = []
    for allPtr, keptPtr in zip(allSets, keptSets):
        classes = allPtr.get()
        classset, ids = classes_to_classset(classes)
        kept = sorted(set(ids) & class_ids(keptPtr.get()))
        sources.append(ClassSetSource(classset, kept, job=classes.getFileName()))
        if log is not None:
            log("%s: %d of %d classes kept" % (classes.getFileName(), len(kept), len(ids)))
    return sources

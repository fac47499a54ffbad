"""Fast subsets of a SetOfClasses2D: the kept classes and their particles, copied in SQL.

Scipion's own way (``SetOfClasses.appendFromClasses`` then ``SetOfParticles.appendFromClasses``)
builds a Python ``Particle`` for every particle twice (clone + insert), about 10^4 particles/s.
Here each output class and the output particle set get their first particle through the normal
Scipion API (which creates the tables with the mapping Scipion expects), then the remaining rows
are copied with one ``INSERT INTO ... SELECT`` from the input classes' sqlite file, attached to the
output's connection. The row layout is checked first (same ``Classes`` mapping and columns);
where it differs, that class falls back to the item-by-item API. Items keep their ids, CTF, 2D
alignment, extra attributes and enabled flag; disabled classes and particles are left out, as
Scipion does.
"""
import logging
import sqlite3

import numpy as np
from pwem.constants import ALIGN_NONE
from pwem.objects import Class2D
from pyworkflow.object import Pointer

logger = logging.getLogger(__name__)

_SRC = "classranker_src"
_IDS = "temp.classranker_ids"


def _class_prefix(class_id):
    return "Class%03d_" % class_id


def _mapping(db, table):
    db.executeCommand(f"SELECT label_property, column_name, class_name FROM {table} ORDER BY id")
    return [tuple(row) for row in db.cursor.fetchall()]


def _columns(db, schema, table):
    db.executeCommand(f"PRAGMA {schema}.table_info({table})")
    return [row[1] for row in db.cursor.fetchall()]


class _Source:
    """The input sqlite ATTACHed to the output sets' connections (once each, detached on exit).

    Output classes share one connection (pyworkflow reuses it for the per-class tables); ATTACH
    must run outside a transaction, so each connection is committed before attaching.
    """

    def __init__(self, path):
        self.path = path
        self._dbs = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for db in self._dbs.values():
            db.commit()
            db.executeCommand(f"DETACH DATABASE {_SRC}")
        self._dbs.clear()

    def attach(self, db):
        if id(db.connection) not in self._dbs:
            db.commit()
            db.executeCommand(f"ATTACH DATABASE ? AS {_SRC}", (self.path,))
            self._dbs[id(db.connection)] = db
        return self

    @staticmethod
    def compatible(db, src_prefix, dst_prefix):
        """Same column mapping and same columns in the input and output tables."""
        same_mapping = (_mapping(db, f"{_SRC}.{src_prefix}Classes")
                        == _mapping(db, f"main.{dst_prefix}Classes"))
        return same_mapping and (_columns(db, _SRC, f"{src_prefix}Objects")
                                 == _columns(db, "main", f"{dst_prefix}Objects"))

    @staticmethod
    def copy_rows(db, src_prefixes, dst_prefix, skip_ids, only_ids=None):
        """Copy the enabled rows of the input tables (in id order), except ``skip_ids``; with
        ``only_ids`` (an array of ids), only those rows (the ids go through a temporary table)."""
        columns = ", ".join(_columns(db, "main", f"{dst_prefix}Objects"))
        skip = ",".join(str(int(i)) for i in skip_ids) or "NULL"
        only = ""
        if only_ids is not None:
            _fill_ids(db, only_ids)
            only = f" AND id IN (SELECT id FROM {_IDS})"
        union = " UNION ALL ".join(f"SELECT {columns} FROM {_SRC}.{p}Objects WHERE enabled=1 "
                                   f"AND id NOT IN ({skip}){only}" for p in src_prefixes)
        db.executeCommand(f"INSERT INTO main.{dst_prefix}Objects ({columns}) "
                          f"SELECT * FROM ({union}) ORDER BY id")
        db.executeCommand(f"SELECT COUNT(*), MAX(id) FROM main.{dst_prefix}Objects")
        count, max_id = db.cursor.fetchone()
        return int(count), int(max_id or 0)


def _fill_ids(db, ids, chunk=1 << 16):
    """The temporary id table holds ``ids``: filled ``chunk`` ids per statement (one JSON array
    text each, expanded by sqlite's json_each), so Python never builds a row object per id and
    holds at most one chunk of text."""
    ids = np.asarray(ids, dtype=np.int64)
    db.executeCommand(f"CREATE TEMP TABLE IF NOT EXISTS {_IDS} (id INTEGER PRIMARY KEY)")
    db.executeCommand(f"DELETE FROM {_IDS}")
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        try:
            db.executeCommand(f"INSERT OR IGNORE INTO {_IDS} (id) SELECT value FROM json_each(?)",
                              ("[" + ",".join(map(str, part.tolist())) + "]",))
        except sqlite3.OperationalError:  # an sqlite without JSON functions
            db.cursor.executemany(f"INSERT OR IGNORE INTO {_IDS} (id) VALUES (?)",
                                  ((i,) for i in part.tolist()))


def _first_enabled(cls):
    for item in cls.iterItems(orderBy="id", where="enabled=1", limit=1):
        return item.clone()
    return None


def _finish_set(item_set, count, max_id):
    item_set._size.set(count)
    item_set._idCount = max_id


def subset_classes(in_classes, out_classes, keep_ids, update_class=None, fast=True):
    """Append the classes ``keep_ids`` of ``in_classes`` (and their particles) to ``out_classes``.

    ``update_class(new_class)``: called on each class before it is stored (to set attributes).
    Returns the number of particles copied.
    """
    keep = set(int(i) for i in keep_ids)
    total = 0
    with _Source(in_classes.getFileName()) as source:
        for cls in in_classes.iterItems(orderBy="id"):
            cid = cls.getObjId()
            if cid not in keep or not cls.isEnabled():
                continue
            new_cls = Class2D()
            new_cls.copyInfo(cls)
            new_cls.setObjId(cid)
            if update_class is not None:
                update_class(new_cls)
            out_classes.append(new_cls)
            first = _first_enabled(cls)
            if first is not None:
                new_cls.append(first)
                prefix = _class_prefix(cid)
                db = new_cls._getMapper().db
                source.attach(db)
                if fast and source.compatible(db, prefix, prefix):
                    _finish_set(new_cls, *source.copy_rows(db, [prefix], prefix, [first.getObjId()]))
                else:
                    logger.info("class %d: row layout differs, copying item by item", cid)
                    for img in cls.iterItems(orderBy="id", where="enabled=1"):
                        if img.getObjId() != first.getObjId():
                            new_cls.append(img.clone())
                total += new_cls.getSize()
            out_classes.update(new_cls)
    out_classes.write()
    return total


def subset_particles(out_classes, out_particles, fast=True):
    """Fill ``out_particles`` with the (enabled) particles of the classes in ``out_classes``."""
    class_ids = [c.getObjId() for c in out_classes.iterItems(orderBy="id") if c.getSize() > 0]
    if not class_ids:
        out_particles.write()
        return 0
    first = out_classes[class_ids[0]].getFirstItem().clone()
    out_particles.append(first)
    db = out_particles._getMapper().db
    prefixes = [_class_prefix(cid) for cid in class_ids]
    with _Source(out_classes.getFileName()) as source:
        source.attach(db)
        ok = fast and all(source.compatible(db, p, "") for p in prefixes)
        if ok:
            _finish_set(out_particles, *source.copy_rows(db, prefixes, "", [first.getObjId()]))
    if not ok:
        logger.info("particles: row layouts differ between classes, copying item by item")
        for cid in class_ids:
            for img in out_classes[cid].iterItems(orderBy="id", where="enabled=1"):
                if img.getObjId() != first.getObjId():
                    out_particles.append(img.clone())
    out_particles.write()
    return out_particles.getSize()


def copy_particles(in_classes, out_particles, members, fast=True):
    """Fill ``out_particles`` with the particles ``members`` of ``in_classes``, in id order.

    ``members``: DataFrame with ``particle_id`` and ``class_id`` (the class each particle is in),
    e.g. the particles a rebalance keeps: one SQL copy restricted to those ids, whatever their number.
    """
    members = members.sort_values("particle_id")
    if members.empty:
        out_particles.write()
        return 0
    first_class, first_id = int(members["class_id"].iloc[0]), int(members["particle_id"].iloc[0])
    first = in_classes[first_class][first_id].clone()
    out_particles.append(first)
    class_ids = sorted(int(c) for c in members["class_id"].unique())
    prefixes = [_class_prefix(cid) for cid in class_ids]
    db = out_particles._getMapper().db
    with _Source(in_classes.getFileName()) as source:
        source.attach(db)
        ok = fast and all(source.compatible(db, p, "") for p in prefixes)
        if ok:
            _finish_set(out_particles, *source.copy_rows(db, prefixes, "", [first_id],
                                                         only_ids=members["particle_id"].to_numpy()))
    if not ok:
        logger.info("particles: row layouts differ between classes, copying item by item")
        wanted = set(members["particle_id"].tolist()) - {first_id}
        for cid in class_ids:
            for img in in_classes[cid].iterItems(orderBy="id", where="enabled=1"):
                if img.getObjId() in wanted:
                    out_particles.append(img.clone())
    out_particles.write()
    if out_particles.getSize() != len(members):
        logger.warning("%d particles asked for, %d copied (disabled or missing rows)", len(members),
                       out_particles.getSize())
    return out_particles.getSize()


def new_particle_set(protocol, in_classes, suffix=""):
    """An empty SetOfParticles of ``protocol`` with the sampling, acquisition, CTF and 2D alignment
    of the particles classified in ``in_classes``."""
    in_parts = in_classes.getImages()
    particles = protocol._createSetOfParticles(suffix=suffix)
    if in_parts is not None:
        particles.copyInfo(in_parts)
    for cls in in_classes.iterItems(orderBy="id"):  # the classified particles' alignment
        if cls.getSize() > 0:
            if in_parts is None:
                particles.copyInfo(cls)
            if cls.getAlignment() != ALIGN_NONE:
                particles.setAlignment(cls.getAlignment())
            break
    return particles


def create_subset_outputs(protocol, in_classes, keep_ids, update_class, particles_name,
                          suffix="", fast=True):
    """Create (not define) the output SetOfParticles + SetOfClasses2D for the classes ``keep_ids``.

    The classes point to the particles through ``Pointer(protocol, extended=particles_name)``, so
    define both outputs together. Alignment, CTF flag, sampling and acquisition are kept.
    """
    particles = new_particle_set(protocol, in_classes, suffix)
    classes = protocol._createSetOfClasses2D(Pointer(protocol, extended=particles_name), suffix=suffix)
    subset_classes(in_classes, classes, keep_ids, update_class, fast=fast)
    subset_particles(classes, particles, fast=fast)
    return classes, particles

"""Scipion protocols of ClassRanker (installed as classranker_plugin.protocols).

Scipion finds protocols by scanning this module's namespace: every protocol class is re-exported.
"""
from .protocol_auto_select import ProtClassRankerAutoSelect2D
from .protocol_change_cutoff import ProtClassRankerChangeCutoff
from .protocol_import_classes import ProtClassRankerImportClasses2D
from .protocol_make_dataset import ProtClassRankerMakeDataset
from .protocol_rebalance import ProtClassRankerRebalance2D
from .protocol_train import ProtClassRankerTrain

__all__ = ["ProtClassRankerAutoSelect2D", "ProtClassRankerChangeCutoff",
           "ProtClassRankerImportClasses2D", "ProtClassRankerMakeDataset", "ProtClassRankerRebalance2D",
           "ProtClassRankerTrain"]

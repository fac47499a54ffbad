"""Scipion viewers of ClassRanker (Scipion finds them in this module's namespace).

Only loaded by Scipion (it imports pyworkflow); the plain figures are in ``plots``.
"""
import sys

if "pyworkflow" in sys.modules:
    from .viewer_auto_select import ClassRankerViewer  # noqa: F401

    __all__ = ["ClassRankerViewer"]

"""Scipion wizards of ClassRanker (Scipion finds them in this module's namespace)."""
from .wizard_cutoff import ClassRankerCutoffWizard

__all__ = ["ClassRankerCutoffWizard"]

"""Simulated, labelled Class2D jobs for training and testing (procedural engine).

``simulate_job(outdir, ...)`` writes a RELION-3.1-style Class2D job folder with a truth.csv;
``JUNK_KINDS`` names the kinds of junk class it can make.
"""
from .junk import JUNK_KINDS
from .procedural import simulate_job

__all__ = ["simulate_job", "JUNK_KINDS"]

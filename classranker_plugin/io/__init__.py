"""Readers and writers of class averages: RELION jobs, plain stacks, RELION-compatible outputs."""
from .atomic import atomic_output_dir, atomic_write, check_output_dir
from .reader import read_classes
from .relion import read_data_star, read_relion_job
from .stack import read_stack
from .validate import empty_class_mask, validate_classes
from .writers import (select_particles, write_class_scores, write_particles,
                      write_selected_class_averages)

__all__ = [
    "atomic_output_dir", "atomic_write", "check_output_dir", "empty_class_mask", "read_classes", "read_data_star",
    "read_relion_job", "read_stack", "select_particles", "validate_classes", "write_class_scores",
    "write_particles", "write_selected_class_averages",
]

"""Run ClassRanker as a RELION External job.

RELION's pipeliner calls the program as
``classranker external --o External/job012/ --in_parts Class2D/job008/run_it025_data.star
--min_score 0.5 --j 1 --pipeline_control External/job012/`` (parameters are the job's
label/value pairs). The classes of the same Class2D iteration are found by name, scored, and the
job directory receives particles.star and class_averages.star in RELION 3.1+ format, the plots,
RELION_OUTPUT_NODES.star and finally RELION_JOB_EXIT_SUCCESS, or RELION_JOB_EXIT_FAILURE with the
reason in run.err when anything goes wrong.
"""
from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import pandas as pd
import starfile

from ..checkpoint import load_model
from ..errors import InputError
from ..io import read_classes
from ..scoring import auto_select, format_summary

log = logging.getLogger(__name__)

SUCCESS = "RELION_JOB_EXIT_SUCCESS"
FAILURE = "RELION_JOB_EXIT_FAILURE"
OUTPUT_NODES = "RELION_OUTPUT_NODES.star"
#: RELION 3.1 node types (pipeline_jobs.h): particles data and 2D references
NODE_PARTICLES, NODE_2DREFS = 3, 5


def add_args(parser):
    parser.add_argument("--o", dest="output", required=True, help="the External job directory (RELION passes it)")
    parser.add_argument("--in_parts", help="run_itNNN_data.star of a Class2D job")
    parser.add_argument("--in_opt", "--in_optimiser", dest="in_opt", help="run_itNNN_optimiser.star of a Class2D job")
    parser.add_argument("--in_model", help="run_itNNN_model.star of a Class2D job")
    parser.add_argument("--min_score", "--cutoff", dest="cutoff", type=float, default=0.5,
                        help="keep classes with score >= this (0..1)")
    parser.add_argument("--min_classes", "--select_min_nr_classes", dest="min_classes", type=int, default=0)
    parser.add_argument("--min_particles", "--select_min_nr_particles", dest="min_particles", type=int, default=0)
    parser.add_argument("--model", help="model checkpoint (default: the bundled model)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--j", type=int, default=1, help="threads (RELION passes it)")
    parser.add_argument("--pipeline_control", help="directory for RELION's exit markers (default: --o)")


def _input_file(args) -> str:
    for value in (args.in_parts, args.in_opt, args.in_model):
        if value:
            return value
    raise InputError("no input given", fix="connect the particles of a Class2D job (run_itNNN_data.star) "
                                         "as the External job's input particles (--in_parts)")


def write_output_nodes(job_dir: Path, with_particles: bool):
    nodes = []
    if with_particles:
        nodes.append((str(job_dir / "particles.star"), NODE_PARTICLES))
    nodes.append((str(job_dir / "class_averages.star"), NODE_2DREFS))
    table = pd.DataFrame(nodes, columns=["rlnPipeLineNodeName", "rlnPipeLineNodeType"])
    starfile.write({"output_nodes": table}, job_dir / OUTPUT_NODES, overwrite=True)


def run_job(args) -> int:
    job_dir = Path(args.output)
    control = Path(args.pipeline_control or args.output)
    job_dir.mkdir(parents=True, exist_ok=True)
    control.mkdir(parents=True, exist_ok=True)
    for marker in (SUCCESS, FAILURE):
        (control / marker).unlink(missing_ok=True)
    try:
        import torch
        torch.set_num_threads(max(1, args.j))
        classset = read_classes(_input_file(args))
        ranker = load_model(args.model, device=args.device)
        summary = auto_select(classset, job_dir, ranker, cutoff=args.cutoff, min_classes=args.min_classes,
                              min_particles=args.min_particles, device=args.device)
        write_output_nodes(job_dir, classset.has_particles)
        print(format_summary(summary))
    except Exception as error:  # RELION must see every failure as a failed job
        message = str(error) if isinstance(error, InputError) else traceback.format_exc()
        print(f"classranker external: error: {message}", file=sys.stderr)
        (control / FAILURE).touch()
        return 1
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C: outputs already removed; RELION sees a failed job
        (control / FAILURE).touch()
        raise
    (control / SUCCESS).touch()
    return 0


def main(args) -> int:
    return run_job(args)


def entry_point(argv=None) -> int:
    """``classranker_external``: the executable to give RELION as the External job's program."""
    from .main import main as classranker_main
    return classranker_main(["external"] + list(sys.argv[1:] if argv is None else argv))

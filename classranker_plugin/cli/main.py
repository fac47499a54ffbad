"""``classranker`` command line: one module per subcommand, each with ``add_args(parser)`` and ``main(args)``."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

# Before torch is imported by a subcommand: OpenMP threads that wait by sleeping, not spinning. On a
# shared node (a queue job, a busy workstation) spinning threads wait on each other: scoring 300
# classes took 1.2 s instead of 0.43 s (benchmarks/RESULTS.md). Set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .. import __version__  # noqa: E402
from ..errors import InputError  # noqa: E402

#: subcommand -> (module under classranker_plugin.cli, one-line help)
SUBCOMMANDS = {
    "score": ("score", "score classes, select those above the cutoff, write the selected classes and particles"),
    "demo": ("demo", "score the bundled example job and print the scores and the selection"),
    "simulate": ("simulate", "write labelled, Class2D-like simulated jobs (procedural or with RELION)"),
    "features": ("features", "compute feature vectors and write them in RELION's training-format STAR"),
    "make-dataset": ("make_dataset", "build a compact, memory-mapped training set from labelled classes"),
    "train": ("train", "train or fine-tune a model (CPU or GPU, resumable)"),
    "evaluate": ("evaluate", "measure a model against labels and the trivial baselines"),
    "rebalance": ("rebalance", "group classes into superclasses of similar views and rebalance particles"),
    "external": ("external", "run as a RELION External job (called by RELION's pipeliner)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classranker",
        description="Score 2D class averages from 0 (junk) to 1 (good) and auto-select the good ones.")
    parser.add_argument("--version", action="version", version=f"classranker {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debugging messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"{__package__}.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.{module_name}":
                raise
            continue  # subcommand not installed in this build
        sub_parser = sub.add_parser(name, help=help_text, description=module.__doc__,
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_args(sub_parser)
        sub_parser.set_defaults(func=module.main)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a queue system's kill, RELION's "abort"), raised so that partial outputs are removed."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if getattr(args, "command", None) != "external":
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        print(f"classranker external: ignoring options this job does not use: {' '.join(unknown)}",
              file=sys.stderr)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return int(args.func(args) or 0)
    except InputError as error:
        print(f"classranker {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"classranker {args.command}: interrupted; no partial output was kept", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

"""Finding and running RELION's programs (relion_project, relion_refine, ...) for the RELION engine."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..errors import InputError

INSTALL_FIX = ("install RELION (Debian/Ubuntu: `apt-get install relion`, or build it from "
               "https://github.com/3dem/relion) so that relion_refine and relion_project are on PATH")


def find_program(name: str) -> str:
    """Absolute path of a RELION program; InputError naming it and how to install RELION if missing."""
    path = shutil.which(name)
    if path is None:
        raise InputError(f"{name} not found on PATH: the RELION engine runs RELION's own programs",
                         fix=INSTALL_FIX)
    return path


def relion_available() -> bool:
    return all(shutil.which(p) for p in ("relion_refine", "relion_project"))


def run_program(args: list, log_path: Path, cwd=None, threads: int = 1) -> float:
    """Run a RELION command, stdout+stderr to ``log_path``; returns seconds; RuntimeError with the log tail."""
    program = find_program(args[0])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.time()
    with open(log_path, "w") as log:
        log.write(" ".join(str(a) for a in args) + "\n")
        log.flush()
        result = subprocess.run([program] + [str(a) for a in args[1:]], cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = Path(log_path).read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{args[0]} failed with status {result.returncode} (log: {log_path}):\n{tail}")
    return time.time() - start


def progress(message: str) -> None:
    print(f"[relion-engine] {message}", file=sys.stderr, flush=True)

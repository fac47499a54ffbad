"""Shared pytest fixtures."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CLASSRANKER_SHARED", REPO.parent / "shared"))
TUTORIAL = SHARED / "data" / "relion30_tutorial_betagal"


@pytest.fixture(scope="session")
def tutorial_dir():
    """The real RELION 3.0 tutorial Class2D outputs; skipped on a clone without ../shared."""
    if not TUTORIAL.is_dir():
        pytest.skip(f"real RELION tutorial data not found at {TUTORIAL} (a fresh clone has no ../shared)")
    return TUTORIAL

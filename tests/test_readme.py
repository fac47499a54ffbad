"""The README documents what the code does: the feature table and the two commands."""
from pathlib import Path

from classranker_plugin.features.classranker import FEATURE_TABLE

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
CI = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()


def test_every_feature_is_in_the_readme_table():
    for name, meaning, *_ in FEATURE_TABLE:
        assert f"| `{name}` | {meaning} |" in README, f"README feature table is missing or stale for {name}"


def test_ci_runs_exactly_the_readme_test_command():
    command = ".venv/bin/python -m pytest -q"
    assert f"```bash\n{command}\n```" in README
    assert CI.strip().splitlines()[-1] == command

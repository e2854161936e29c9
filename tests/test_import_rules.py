"""The import rules (pyproject's ``[tool.importlinter]``, checked by ``make test``) hold, and would
catch a breach: the check is run on a copy of the packages with one forbidden import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path, packages: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH comes before the editable install's finder, so the copy is what gets analysed.
    environment = os.environ | {"PYTHONPATH": str(packages)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Path:
    """A copy of batchcast and batchcast_api whose notify step imports a training module."""
    folder = tmp_path_factory.mktemp("packages")
    shutil.copytree(ROOT / "shared" / "batchcast", folder / "batchcast")
    shutil.copytree(ROOT / "api", folder / "batchcast_api")
    notify = folder / "batchcast" / "steps" / "notify.py"
    notify.write_text(notify.read_text() + "\nfrom batchcast.ops import training  # noqa\n")
    return folder


def test_a_step_importing_scikit_learn_breaks_its_contract(packages: Path):
    outcome = _lint(ROOT, packages)
    assert outcome.returncode == 1, outcome.stdout + outcome.stderr
    assert "ingest, partition and notify start without scikit-learn, scipy or skops BROKEN" in outcome.stdout
    assert "batchcast.steps.notify -> batchcast.ops.training" in outcome.stdout
    # The check names the rules broken, not everything: the layers still hold.
    assert "Layers: a module imports only the layers below it KEPT" in outcome.stdout

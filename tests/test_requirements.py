"""The per-stage requirement files agree with pyproject's extras and with the installed environment."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "prepare": ROOT / "finetune" / "requirements-prepare_dataset.txt",
    "finetune": ROOT / "finetune" / "requirements-finetune.txt",
    "evaluation": ROOT / "evaluation" / "requirements-evaluation.txt",
}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _parse(path: Path) -> tuple[list[str], list[str]]:
    """(requirement lines, option lines such as `-c FILE`) of a pip requirements file."""
    reqs, opts = [], []
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        (opts if line.startswith("-") else reqs).append(line)
    return reqs, opts


def _norm(reqs: list[str]) -> set[str]:
    out = set()
    for r in reqs:
        q = Requirement(r)
        out.add(f"{q.name.lower().replace('_', '-')}{sorted(q.extras)}{q.specifier}")
    return out


@pytest.mark.parametrize("extra", sorted(FILES))
def test_file_matches_pyproject_extra(extra: str) -> None:
    project = _pyproject()
    reqs, opts = _parse(FILES[extra])
    want = _norm(project["dependencies"] + project["optional-dependencies"][extra])
    assert _norm(reqs) == want, f"{FILES[extra].name} differs from pyproject [{extra}] + core dependencies"
    # each file applies the shared constraints, by a path relative to itself (as pip resolves it)
    assert "-c ../requirements/constraints.txt" in opts
    assert (FILES[extra].parent / "../requirements/constraints.txt").resolve().is_file()


def test_all_extra_covers_the_stage_extras() -> None:
    extras = _pyproject()["optional-dependencies"]
    (all_req,) = extras["all"]
    assert set(Requirement(all_req).extras) >= {"prepare", "finetune", "evaluation", "dev"}


def test_constraints_keep_the_known_traps() -> None:
    text = (ROOT / "requirements" / "constraints.txt").read_text()
    cons = {Requirement(line).name: Requirement(line) for line in _parse(ROOT / "requirements" / "constraints.txt")[0]}
    assert str(cons["torch"].specifier) == "==2.14.1"
    assert str(cons["torchvision"].specifier) == "==0.29.1"
    assert not cons["opencv-contrib-python-headless"].specifier.contains("5.0.0")
    assert "tensorflow" not in cons  # TensorFlow stays out of the default install
    assert "TensorFlow" in text
    for extra in ("prepare", "evaluation"):
        names = {Requirement(r).name for r in _parse(FILES[extra])[0]}
        assert "werkzeug" in names  # deepface 0.0.103 does not import without it


def test_installed_env_satisfies_the_files() -> None:
    """pip, offline, finds every requirement (under the constraints) already installed."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-q", "--disable-pip-version-check"]
    for f in FILES.values():
        cmd += ["-r", str(f)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_tensorflow_stays_out() -> None:
    """deepface 0.0.103 must run on its PyTorch backend; TensorFlow in the env would switch it."""
    import importlib.util

    assert importlib.util.find_spec("tensorflow") is None
    assert importlib.util.find_spec("werkzeug") is not None

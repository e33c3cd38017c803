"""The golden run (scripts/golden_run.py): the smoke and the test-size toy runs still write the recorded bytes,
and every stage script still prints the recorded --help. A structure-only refactor must pass it unchanged;
after an intended change of results, re-record with `python scripts/golden_run.py record`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("golden_run", ROOT / "scripts" / "golden_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOLDEN = _load()
MANIFEST = {"stage": "models/unet", "config_hash": "abc", "config": {"lr": 0.0003}, "root": "..",
            "inputs": [{"path": "enriched", "sha256": "111", "size": 10, "files": 2},
                       {"path": "3 files by size and mtime", "files": 3, "sha256": "mtimes-1"}],
            "outputs": [{"path": "models/unet", "sha256": "222", "size": 5, "files": 1, "mtime_ns": 1}],
            "versions": {"torch": "2.14.1"}, "argv": ["finetune_sd.py"], "wall_time_s": 1.5,
            "finished_at": "2026-12-03T06:00:00+0000", "extra": {"steps": 4}}


def _hash(tmp_path: Path, name: str, content: bytes) -> str:
    import hashlib

    path = tmp_path / name
    path.write_bytes(content)
    GOLDEN.normalised_bytes.cache_clear()  # one path, new content each call
    return hashlib.sha256(GOLDEN.normalised_bytes(path, root=Path("/checkout"))).hexdigest()


def _manifest_hash(tmp_path: Path, **changes: object) -> str:
    return _hash(tmp_path, "_manifest.json", json.dumps({**MANIFEST, **changes}).encode())


def test_manifest_normaliser_drops_only_time_host_and_argv(tmp_path: Path) -> None:
    same = _manifest_hash(tmp_path)
    volatile = dict(wall_time_s=99.0, finished_at="2027-01-01T00:00:00+0000", versions={"torch": "9"},
                    argv=["elsewhere"], outputs=[{**MANIFEST["outputs"][0], "mtime_ns": 2}],
                    inputs=[MANIFEST["inputs"][0], {**MANIFEST["inputs"][1], "sha256": "mtimes-2"}])
    for key, value in volatile.items():
        assert _manifest_hash(tmp_path, **{key: value}) == same, key
    results = dict(stage="models/text", config_hash="abd", config={"lr": 0.0004}, extra={"steps": 5},
                   inputs=[{**MANIFEST["inputs"][0], "sha256": "112"}, MANIFEST["inputs"][1]],
                   outputs=[{**MANIFEST["outputs"][0], "sha256": "223"}])
    for key, value in results.items():
        assert _manifest_hash(tmp_path, **{key: value}) != same, key


def test_fingerprint_and_commit_are_masked_and_nothing_else(tmp_path: Path) -> None:
    def generation(spec: str, files: str) -> bytes:
        return json.dumps({"settings": {"fingerprint": {"spec": spec, "files": files}, "steps": 4}}).encode()

    same = _hash(tmp_path, "generation.json", generation("/m/unet", "aaa"))
    assert _hash(tmp_path, "generation.json", generation("/m/unet", "bbb")) == same
    assert _hash(tmp_path, "generation.json", generation("/m/text", "aaa")) != same
    fingerprinted = {"fingerprint": {"spec": "/m/unet", "files": "aaa"}}
    marked = _manifest_hash(tmp_path, config=fingerprinted)
    assert _manifest_hash(tmp_path, config={"fingerprint": {"spec": "/m/unet", "files": "bbb"}}) == marked
    assert _manifest_hash(tmp_path, config={"fingerprint": {"spec": "/m/both", "files": "aaa"}}) != marked
    results = {"commit": "f5ba280", "config_hash": "c1", "rows": [[0.25]]}
    same = _hash(tmp_path, "toy_seed0.json", json.dumps(results).encode())
    assert _hash(tmp_path, "toy_seed0.json", json.dumps({**results, "commit": "41d5b9f"}).encode()) == same
    assert _hash(tmp_path, "toy_seed0.json", json.dumps({**results, "rows": [[0.26]]}).encode()) != same


def test_report_normaliser_drops_only_the_time(tmp_path: Path) -> None:
    page = '<p class="note">Generated {} from runs/toy.</p><td>{}</td>'
    base = _hash(tmp_path, "report.html", page.format("2026-12-03 06:52:40", "0.250").encode())
    assert _hash(tmp_path, "report.html", page.format("2027-01-31 23:59:59", "0.250").encode()) == base
    assert _hash(tmp_path, "report.html", page.format("2026-12-03 06:52:40", "0.251").encode()) != base
    assert _hash(tmp_path, "summary.csv", b"gender_tvd\n0.25\n") != _hash(tmp_path, "summary.csv", b"gender_tvd\n0.26\n")


def test_checkout_path_is_replaced_and_nothing_else(tmp_path: Path) -> None:
    assert _hash(tmp_path, "a.json", b'"/checkout/t2i_debias/data/x.csv"') == _hash(
        tmp_path, "a.json", b'"<ROOT>/t2i_debias/data/x.csv"')
    assert _hash(tmp_path, "a.json", b'"/other/t2i_debias/data/x.csv"') != _hash(
        tmp_path, "a.json", b'"/checkout/t2i_debias/data/x.csv"')


def test_differences_name_every_differing_missing_and_extra_entry() -> None:
    lines = GOLDEN.differences({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"}, "file")
    assert lines == ["file differs: b", "file missing: c", "file extra: d"]


@pytest.mark.e2e
@pytest.mark.slow
def test_golden_run_matches_the_recording() -> None:
    """Both runs and every --help, byte for byte (about 4 minutes at one thread)."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "golden_run.py"), "check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (
        "outputs differ from tests/golden/ (re-record with `python scripts/golden_run.py record` only if the "
        f"change of results is intended):\n{proc.stdout[-20000:]}\n{proc.stderr[-3000:]}")

"""Run folders: atomic writes survive SIGKILL, manifests skip complete stages, safe_join rejects escapes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from t2i_debias.core.files import (
    MANIFEST,
    atomic_open,
    atomic_save_image,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    describe_path,
    hash_file,
    hash_obj,
    safe_join,
)
from t2i_debias.core.stage import Stage, run_stage

ROOT = Path(__file__).resolve().parents[1]

# A child that starts a large atomic write, says so after the first chunk, then keeps writing slowly.
_WRITER = textwrap.dedent(
    """
    import sys, time
    from t2i_debias.core.files import atomic_open
    target = sys.argv[1]
    chunk = b"x" * (1 << 20)
    with atomic_open(target, "wb") as fh:
        for i in range(10_000):
            fh.write(chunk)
            fh.flush()
            if i == 3:
                print("WRITING", flush=True)
            time.sleep(0.01)
    print("DONE", flush=True)
    """
)


def _kill_mid_write(target: Path) -> None:
    """Start the writer child, wait until it has written several MB, then SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE,
                            cwd=ROOT, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "WRITING", f"writer did not start: {line!r}"
        # The temp file really holds partial data at the moment of the kill.
        tmps = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
        assert tmps and max(p.stat().st_size for p in tmps) >= 4 << 20
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_write_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old content")
    _kill_mid_write(target)
    assert target.read_bytes() == b"old content"
    # Whatever the killed writer left behind is a hidden temp name, never the target's name.
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(n.startswith(".data.bin.") and n.endswith(".tmp") for n in leftovers)


def test_sigkill_mid_write_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    _kill_mid_write(target)
    assert not target.exists()
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".")] == []


def test_exception_in_atomic_open_removes_temp_and_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(target, "w") as fh:
        fh.write("new partial")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_writers_round_trip(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "sub" / "t.txt", "héllo\n")
    assert (tmp_path / "sub" / "t.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "j.json", {"b": 1, "a": Path("x/y")})
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": "x/y", "b": 1}
    atomic_write_csv(tmp_path / "c.csv", pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}))
    assert pd.read_csv(tmp_path / "c.csv").to_dict("list") == {"x": [1, 2], "y": ["a", "b"]}
    img = Image.new("RGB", (4, 3), (10, 20, 30))
    atomic_save_image(tmp_path / "i.png", img)
    with Image.open(tmp_path / "i.png") as back:
        assert back.format == "PNG" and back.size == (4, 3) and back.getpixel((0, 0)) == (10, 20, 30)
    # nothing but the targets (no temp files) remains
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.bin", "c.csv", "i.png", "j.json", "sub", "t.txt"]


def test_hashes_and_describe_path(tmp_path: Path) -> None:
    f = tmp_path / "f.txt"
    f.write_bytes(b"abc")
    # sha256("abc"), a published test vector
    assert hash_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_obj({"a": 1, "b": 2}) == hash_obj({"b": 2, "a": 1})
    assert hash_obj({"a": 1}) != hash_obj({"a": 2})
    d = describe_path(f)
    assert d["size"] == 3 and d["sha256"] == hash_file(f)
    folder = tmp_path / "dir"
    (folder / "x").mkdir(parents=True)
    (folder / "x" / "1.txt").write_text("1")
    before = describe_path(folder)
    (folder / MANIFEST).write_text("{}")  # a manifest does not change the folder's hash
    assert describe_path(folder)["sha256"] == before["sha256"]
    (folder / "x" / "1.txt").write_text("2")
    assert describe_path(folder)["sha256"] != before["sha256"]
    assert describe_path(tmp_path / "nope")["missing"] is True


# ----------------------------------------------------------------------------- stages
def _stage(tmp_path: Path, cfg: dict, inputs: list[Path]) -> Stage:
    return Stage("demo", tmp_path / "stage", cfg, inputs)


def _body(calls: list[int]):
    def body(stage: Stage) -> list[Path]:
        calls.append(1)
        out = stage.folder / "out.txt"
        atomic_write_text(out, f"run {len(calls)}")
        return [out]

    return body


def test_stage_skips_when_complete_and_reruns_on_change(tmp_path: Path) -> None:
    inp = tmp_path / "input.csv"
    inp.write_text("a\n1\n")
    calls: list[int] = []
    body = _body(calls)

    assert run_stage(_stage(tmp_path, {"k": 1}, [inp]), body, log=lambda *_: None) is True
    assert len(calls) == 1
    # same config, same input -> skipped
    assert run_stage(_stage(tmp_path, {"k": 1}, [inp]), body, log=lambda *_: None) is False
    assert len(calls) == 1
    # changed config -> reruns
    assert run_stage(_stage(tmp_path, {"k": 2}, [inp]), body, log=lambda *_: None) is True
    assert len(calls) == 2
    # changed input file -> reruns
    inp.write_text("a\n2\n")
    assert run_stage(_stage(tmp_path, {"k": 2}, [inp]), body, log=lambda *_: None) is True
    assert len(calls) == 3
    assert run_stage(_stage(tmp_path, {"k": 2}, [inp]), body, log=lambda *_: None) is False
    # force -> reruns
    assert run_stage(_stage(tmp_path, {"k": 2}, [inp]), body, force=True, log=lambda *_: None) is True
    assert len(calls) == 4
    # a deleted output -> reruns
    (tmp_path / "stage" / "out.txt").unlink()
    assert run_stage(_stage(tmp_path, {"k": 2}, [inp]), body, log=lambda *_: None) is True
    assert len(calls) == 5


def test_manifest_contents(tmp_path: Path) -> None:
    inp = tmp_path / "input.csv"
    inp.write_text("a\n1\n")
    cfg = {"section": {"x": 1}}
    stage = _stage(tmp_path, cfg, [inp])

    def body(st: Stage):
        time.sleep(0.05)
        out = st.folder / "out.txt"
        atomic_write_text(out, "hello")
        return [out], {"n_rows": 1}

    run_stage(stage, body, log=lambda *_: None)
    m = json.loads((tmp_path / "stage" / MANIFEST).read_text())
    assert m["stage"] == "demo"
    assert m["config_hash"] == hash_obj(cfg) and m["config"] == cfg
    # paths relative to the run folder (here the stage folder's parent), so a moved run stays complete
    assert m["root"] == ".." and m["inputs"] == [{"path": "input.csv", "size": 4, "sha256": hash_file(inp)}]
    (out,) = m["outputs"]
    assert out["path"] == "stage/out.txt" and out["size"] == 5
    assert out["mtime_ns"] == (tmp_path / "stage" / "out.txt").stat().st_mtime_ns
    assert out["sha256"] == hash_file(tmp_path / "stage" / "out.txt")
    assert m["versions"]["python"] and m["versions"]["torch"] and m["versions"]["numpy"]
    assert 0.05 <= m["wall_time_s"] < 30
    assert m["extra"] == {"n_rows": 1}


def test_crash_in_body_leaves_stage_incomplete(tmp_path: Path) -> None:
    calls: list[int] = []
    body = _body(calls)
    run_stage(_stage(tmp_path, {"k": 1}, []), body, log=lambda *_: None)

    def crash(stage: Stage):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_stage(_stage(tmp_path, {"k": 2}, []), crash, log=lambda *_: None)
    # the stale manifest was removed before the body ran: no false "complete"
    assert not (tmp_path / "stage" / MANIFEST).exists()
    assert run_stage(_stage(tmp_path, {"k": 2}, []), body, log=lambda *_: None) is True


def test_corrupt_manifest_means_incomplete(tmp_path: Path) -> None:
    calls: list[int] = []
    run_stage(_stage(tmp_path, {"k": 1}, []), _body(calls), log=lambda *_: None)
    (tmp_path / "stage" / MANIFEST).write_text("{not json")
    assert run_stage(_stage(tmp_path, {"k": 1}, []), _body(calls), log=lambda *_: None) is True


# ----------------------------------------------------------------------------- safe_join
def test_safe_join_accepts_inside(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/b.png") == (tmp_path / "a" / "b.png").resolve()
    assert safe_join(tmp_path, "./a") == (tmp_path / "a").resolve()


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "..", "/etc/passwd", "\\x", ""])
def test_safe_join_rejects_escapes(tmp_path: Path, rel: str) -> None:
    with pytest.raises(ValueError):
        safe_join(tmp_path, rel)


def test_safe_join_rejects_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(ValueError, match="escapes"):
        safe_join(root, "link/file.txt")


def test_atomic_files_get_normal_permissions(tmp_path: Path) -> None:
    """Outputs are readable like any new file (umask), not owner-only as mkstemp creates them."""
    mask = os.umask(0)
    os.umask(mask)
    out = atomic_write_text(tmp_path / "r.txt", "x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~mask

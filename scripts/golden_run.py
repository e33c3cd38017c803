#!/usr/bin/env python
"""Golden run: sha256 of every file two real pipeline runs write, and the --help of every stage script.

A structure-only refactor must change no result (docs/DESIGN.md; the architecture issue's "What must stay
byte-identical"). This script runs finetune/finetune_sd.py on the real stages of this checkout, in
/tmp/t2i_debias_golden/work (a fixed place: absolute paths of run folders and caches enter config hashes),
with its own offline model caches beside it:
- `configs/smoke.toml` on an 8-image MPII fixture (as tests/test_e2e_smoke.py builds it);
- `configs/toy.toml` on the shipped pretrained toy models, cut to test size (TOY_SIZES: every stage runs,
  the control included);
then hashes every file under both run folders and both data folders (keys relative to the work folder),
and captures the --help of every script in SCRIPT_FOLDERS.

Normalised before hashing (time, host and command-line values only; found by running twice and diffing):
- manifests: VOLATILE_MANIFEST_KEYS and their entries' mtime_ns; the labels stage's "<n> files by size and
  mtime" hash; a hash over a file that itself has volatile parts (an input manifest, generation.json,
  report.html, a .mat) is replaced by the hash of that file after normalising;
- model fingerprints (generate.model_fingerprint) anywhere in a JSON file: their size+mtime "files" hash
  (the model "spec" stays); where a stage's config holds one, or holds a `train` hash over the manifest of a
  mode trained earlier in the same run (sequential schedule), config_hash is replaced by a marker (the
  config itself is kept and hashed);
- report.html: the time of "Generated <time> from <run>." and the finished/wall-time cells of the Run table;
- the git commit in results/toy_seed<N>.json and in the results stage's config;
- the run's `.lock` (pid and command line) and the creation time in a .mat header (scipy savemat);
- this checkout's path, e.g. of the packaged occupations.csv in the mpii manifest, becomes "<ROOT>".
Every result file, sha256 of a stable file, config and the rest of config_hash stays.

`record` writes tests/golden/hashes.json (one file a line, sorted) and tests/golden/help/<script>.txt;
`check` recomputes them and lists every differing, missing or extra entry (exit 1 on any). A failed check
leaves the runs in /tmp/t2i_debias_golden/work to diff.

Re-record after an intended change of results (e.g. a new training preset), in one command:
    python scripts/golden_run.py record
Check (what tests/test_golden_run.py runs):
    python scripts/golden_run.py check
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's package, not whichever one the environment installed
GOLDEN = ROOT / "tests" / "golden"
HASHES = GOLDEN / "hashes.json"
HELP_DIR = GOLDEN / "help"
# Paths enter config hashes (model fingerprints name the model folder; [labels] images_dir is resolved), so
# the runs always happen at one fixed place, with their own model caches (built offline from seeds).
BASE = Path("/tmp/t2i_debias_golden")
WORK, CACHE = BASE / "work", BASE / "cache"
CACHE_VARS = (("DEEPFACE_HOME", "deepface"), ("TORCH_HOME", "torch"), ("HF_HOME", "hf"), ("MPLCONFIGDIR", "mpl"),
              ("T2I_DEBIAS_CACHE", "t2i_debias"))
HELP_WIDTH = "10000"  # argparse wraps --help at $COLUMNS: so wide that nothing wraps, so neither the terminal
# nor the checkout path's length (a default naming a file under it) moves a line break

# The folders whose scripts' --help is part of the user surface (the architecture issue's seven + scripts/).
SCRIPT_FOLDERS = ("mpii_dataset", "dataset_analysis", "finetune", "evaluation", "quality_evaluation",
                  "sota_evaluation", "_github_images", "scripts")

# Manifest fields that describe when, where and how a stage ran, not what it computed
# (t2i_debias/core/stage.py Stage.finish, describe_output, describe_stats).
VOLATILE_MANIFEST_KEYS = ("wall_time_s", "finished_at", "started_at", "versions", "argv")
VOLATILE_ENTRY_KEYS = ("mtime_ns",)  # outputs' newest mtime: the content sha256 beside it stays
# The stat_inputs entry ("<n> files by size and mtime") hashes mtimes: its sha256 is replaced by a marker.
STAT_INPUT_LABEL = re.compile(r"^\d+ files by size and mtime$")
# report.html's "Generated <time> from <run>." (report/html.py): only the time goes, the rest of that line
# holds the whole page body.
REPORT_GENERATED = re.compile(rb"Generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
# report.html's "Run" table (report/html.py): each stage's finished_at and wall_time_s, both from its manifest.
REPORT_STAGE_TIMES = re.compile(rb'<td class="k">\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}</td><td>[0-9.]*</td>')
LOCK_LINE = re.compile(rb"^pid \d+ \(.*\)$", re.MULTILINE)  # the run's writer lock (core.locks.lock_run): pid, argv
MAT_CREATED = re.compile(rb"Created on: [A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}")
MANIFEST = "_manifest.json"

# configs/toy.toml cut to test size (flags of finetune/finetune_sd.py). Sizes only: every stage and mode runs.
TOY_SIZES = ["--generate.images_per_prompt", "4", "--generate.num_inference_steps", "4",
             "--bias.sweep_images_per_prompt", "4", "--bias.n_bootstrap", "20",
             "--augment.max_triplets", "16", "--augment.num_inference_steps", "4",
             "--train.max_train_steps", "4", "--train.train_batch_size", "8",
             "--sota.uce_iterations", "1", "--sota.uce_samples", "2", "--report.figure_images", "2"]


# ----------------------------------------------------------------------------- normalising and hashing
def _walk(obj: Any, fn: Any) -> Any:
    """`obj` with `fn` applied to every dict in it, bottom up."""
    if isinstance(obj, dict):
        return fn({k: _walk(v, fn) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_walk(v, fn) for v in obj]
    return obj


def _fingerprint(d: dict[str, Any]) -> dict[str, Any]:
    """A model_fingerprint (generate.py) without its hash of file sizes and mtimes (its "spec" stays), and
    the git commit the results stage records (report/readme_block.py) masked: every refactor changes it."""
    if "spec" in d and isinstance(d.get("files"), str):
        d = {**d, "files": "<sizes and mtimes>"}
    if isinstance(d.get("commit"), str):
        d = {**d, "commit": "<commit>"}
    return d


def _is_volatile(path: Path) -> bool:
    """Whether normalising changes `path` (a file, or any file under a folder but its manifest)."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file() and f.name != MANIFEST]
    return any(normalised_bytes(f) != f.read_bytes() for f in files)


def _tree_sha(path: Path) -> str:
    """sha256 over the normalised files of `path` (a file or a folder, its manifest excepted)."""
    if path.is_file():
        return hashlib.sha256(normalised_bytes(path)).hexdigest()
    h = hashlib.sha256()
    for f in sorted(x for x in path.rglob("*") if x.is_file() and x.name != MANIFEST):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + normalised_bytes(f) + b"\0")
    return h.hexdigest()


def _normalise_entry(entry: Any, root: Path | None) -> Any:
    """An input/output entry without mtimes; a hash over a file with volatile parts is taken after normalising."""
    if not isinstance(entry, dict):
        return entry
    e = {k: v for k, v in entry.items() if k not in VOLATILE_ENTRY_KEYS}
    where = e.get("path")
    if not isinstance(where, str) or "sha256" not in e:
        return e
    if STAT_INPUT_LABEL.match(where):
        e["sha256"] = "<sizes and mtimes>"
        return e
    target = Path(where) if os.path.isabs(where) else root / where if root is not None else None
    if target is not None and target.exists() and _is_volatile(target):
        e.pop("size", None)
        e["sha256"] = "normalised:" + _tree_sha(target)
    return e


def normalise_manifest(obj: dict[str, Any], folder: Path | None = None) -> dict[str, Any]:
    """A manifest without its time/host/argv fields and file mtimes; every result field is kept.

    Where the stage's config holds a value derived from times (a model fingerprint's size+mtime hash; a
    `train` hash over the manifest of a model trained earlier in this run), that value and config_hash are
    replaced by markers; the config itself stays. `folder` (the manifest's) resolves the entries' paths.
    """
    out = {k: v for k, v in obj.items() if k not in VOLATILE_MANIFEST_KEYS}
    root = folder / out["root"] if folder is not None and isinstance(out.get("root"), str) else None
    for key in ("inputs", "outputs"):
        if isinstance(out.get(key), list):
            out[key] = [_normalise_entry(e, root) for e in out[key]]
    config = _walk(out.get("config"), _fingerprint)
    base = (out.get("extra") or {}).get("base") if isinstance(out.get("extra"), dict) else None
    if isinstance(config, dict) and "train" in config and isinstance(base, str) and Path(base).parent.name == "models":
        config["train"] = "<hash over the manifest of " + base + ">"
    if config != out.get("config"):
        out["config"], out["config_hash"] = config, "<hash of the config above, with volatile parts>"
    return out


def _mat_header(data: bytes) -> bytes:
    """A .mat file with the creation time of its 116-byte text header (scipy savemat) masked."""
    return MAT_CREATED.sub(b"Created on: <time>", data[:116]) + data[116:]


@functools.cache
def normalised_bytes(path: Path, root: Path = ROOT) -> bytes:
    """The bytes of `path` with only its volatile parts removed (see the module docstring).

    The checkout's own path (`root`, e.g. of the packaged occupations.csv in the mpii manifest's inputs)
    becomes "<ROOT>", so any checkout of the same code gives the same hashes.
    """
    data = path.read_bytes()
    if path.name == MANIFEST:
        data = json.dumps(normalise_manifest(json.loads(data), path.parent), indent=2, sort_keys=True).encode()
    elif path.suffix == ".json":
        obj = json.loads(data)
        if _walk(obj, _fingerprint) != obj:
            data = json.dumps(_walk(obj, _fingerprint), indent=2, sort_keys=True).encode()
    elif path.name == "report.html":
        data = REPORT_GENERATED.sub(b"Generated <time> ", data)
        data = REPORT_STAGE_TIMES.sub(b'<td class="k"><finished_at></td><td><wall_time_s></td>', data)
    elif path.name == ".lock":
        data = LOCK_LINE.sub(b"pid <pid> (<command line>)", data)
    elif path.suffix == ".mat":
        data = _mat_header(data)
    return data.replace(str(root).encode(), b"<ROOT>")


def hash_tree(folder: Path, base: Path) -> dict[str, str]:
    """{path relative to `base`: sha256 of its normalised bytes} for every file under `folder`."""
    normalised_bytes.cache_clear()
    return {f.relative_to(base).as_posix(): hashlib.sha256(normalised_bytes(f)).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


# ----------------------------------------------------------------------------- the two runs
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({var: str(CACHE / sub) for var, sub in CACHE_VARS})
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS=HELP_WIDTH,
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return env


def _pipeline(args: list[str], cwd: Path, log: Path) -> None:
    """finetune/finetune_sd.py with `args`, run in `cwd`; its output goes to `log`."""
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, str(ROOT / "finetune" / "finetune_sd.py"), *args], cwd=cwd,
                              stdout=fh, stderr=subprocess.STDOUT, env=_env())
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed (exit {proc.returncode}); log: {log}\n{log.read_text()[-4000:]}")


def run_smoke(work: Path) -> None:
    """configs/smoke.toml on an 8-image MPII fixture (tests/test_e2e_smoke.py's), run folder runs/smoke."""
    from t2i_debias.data.mpii_fixture import packaged_activities_path, smoke_fixture, write_fixture

    mat, images = write_fixture(work / "smoke-data", smoke_fixture(packaged_activities_path(), n_images=8, seed=1))
    _pipeline(["--config", "configs/smoke.toml", "--run_dir", "runs/smoke",
               "--mpii.mat_file", str(mat.relative_to(work)), "--mpii.images_dir", str(images.relative_to(work))],
              work, work / "smoke.log")


def run_toy(work: Path) -> None:
    """configs/toy.toml at TOY_SIZES on the shipped seed-0 toy models, run folder runs/toy."""
    _pipeline(["--config", "configs/toy.toml", "--root", "runs",
               "--mpii.mat_file", "toy-data/mpii_human_pose_v1_u12_1.mat", "--mpii.images_dir", "toy-data/images",
               *TOY_SIZES], work, work / "toy.log")


RUNS = {"smoke": (run_smoke, ("runs/smoke", "smoke-data")), "toy": (run_toy, ("runs/toy", "toy-data"))}


def _prepare(work: Path) -> None:
    """`work` as a checkout seen by the configs: configs/ and the toy occupation map at their relative paths."""
    shutil.copytree(ROOT / "configs", work / "configs")
    (work / "t2i_debias" / "toyworld").mkdir(parents=True)
    shutil.copy(ROOT / "t2i_debias" / "toyworld" / "occupations_toy.csv", work / "t2i_debias" / "toyworld")


def run_all(work: Path, names: list[str]) -> dict[str, str]:
    """Run the named configs in `work` and hash their run and data folders (keys relative to `work`)."""
    _prepare(work)
    hashes: dict[str, str] = {}
    for name in names:
        runner, folders = RUNS[name]
        t0 = time.time()
        runner(work)
        print(f"{name}: ran in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        for folder in folders:
            hashes.update(hash_tree(work / folder, work))
    return hashes


# ----------------------------------------------------------------------------- --help texts
def stage_scripts() -> list[Path]:
    """Every script with a command line in SCRIPT_FOLDERS (this checker excepted), relative to ROOT."""
    out = []
    for folder in SCRIPT_FOLDERS:
        for f in sorted((ROOT / folder).glob("*.py")):
            if f.resolve() != Path(__file__).resolve() and "__main__" in f.read_text(encoding="utf-8"):
                out.append(f.relative_to(ROOT))
    return out


def _help_of(script: Path) -> str:
    """`python <script> --help`, run in this process (imports are shared: seconds, not minutes)."""
    import runpy

    buf = io.StringIO()
    argv, path = sys.argv, list(sys.path)
    sys.argv = [str(script), "--help"]
    sys.path.insert(0, str((ROOT / script).parent))
    try:
        with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, path
    return buf.getvalue().replace(str(ROOT), "<ROOT>")


def help_texts() -> dict[str, str]:
    """{script path: its --help text}, from a fresh interpreter at a fixed terminal width."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_help"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"--help capture failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


# ----------------------------------------------------------------------------- record / check
@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    """WORK, emptied, held under a lock so two golden runs on one machine take turns; left for inspection."""
    import fcntl

    BASE.mkdir(parents=True, exist_ok=True)
    with open(BASE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir()
        yield WORK


def compute(work: Path, names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(file hashes, --help texts) of this checkout."""
    return run_all(work, names), help_texts()


def write_golden(hashes: dict[str, str], helps: dict[str, str]) -> None:
    """tests/golden/hashes.json (one entry a line, sorted) and tests/golden/help/<script>.txt."""
    GOLDEN.mkdir(parents=True, exist_ok=True)
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(hashes.items())]
    HASHES.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    shutil.rmtree(HELP_DIR, ignore_errors=True)
    for script, text in helps.items():
        out = HELP_DIR / f"{script}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")


def recorded(names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The recorded hashes (of the runs in `names`) and --help texts."""
    hashes = json.loads(HASHES.read_text(encoding="utf-8")) if HASHES.is_file() else {}
    keep = tuple(p for n in names for p in RUNS[n][1])
    hashes = {k: v for k, v in hashes.items() if k.split("/")[0] in keep or "/".join(k.split("/")[:2]) in keep}
    helps = {f.relative_to(HELP_DIR).as_posix()[:-len(".txt")]: f.read_text(encoding="utf-8")
             for f in sorted(HELP_DIR.rglob("*.txt"))} if HELP_DIR.is_dir() else {}
    return hashes, helps


def differences(want: dict[str, str], got: dict[str, str], kind: str) -> list[str]:
    """One line per differing, missing or extra key."""
    out = [f"{kind} differs: {k}" for k in sorted(want.keys() & got.keys()) if want[k] != got[k]]
    out += [f"{kind} missing: {k}" for k in sorted(want.keys() - got.keys())]
    out += [f"{kind} extra: {k}" for k in sorted(got.keys() - want.keys())]
    return out


def check(work: Path, names: list[str]) -> list[str]:
    """Every difference between this checkout's runs and the recorded ones (empty when identical)."""
    want_hashes, want_helps = recorded(names)
    if not want_hashes:
        return [f"nothing recorded in {HASHES}: run `python scripts/golden_run.py record`"]
    got_hashes, got_helps = compute(work, names)
    return differences(want_hashes, got_hashes, "file") + differences(want_helps, got_helps, "help")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in (("record", "run both configs and write tests/golden/ (hashes.json and help/)"),
                       ("check", "run both configs and compare with tests/golden/; exit 1 on any difference")):
        s = sub.add_parser(name, help=what, description=what)
        if name == "check":
            s.add_argument("--only", nargs="*", choices=sorted(RUNS), default=sorted(RUNS),
                           help="check only these runs (default: all)")
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["_help"]:  # internal: help_texts() runs this in a fresh interpreter
        json.dump({s.as_posix(): _help_of(s) for s in stage_scripts()}, sys.stdout)
        return 0
    args = p.parse_args(argv)
    t0 = time.time()
    with _workdir() as work:
        if args.command == "record":
            write_golden(*compute(work, sorted(RUNS)))
            print(f"recorded {HASHES} and {HELP_DIR} in {time.time() - t0:.0f}s")
            return 0
        diffs = check(work, args.only)
    for line in diffs:
        print(line)
    print(f"golden run: {len(diffs)} difference(s) in {time.time() - t0:.0f}s; the runs are in {WORK}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())

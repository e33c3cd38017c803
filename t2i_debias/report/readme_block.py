"""The README's toy-world table, written from a run's results file so it cannot drift from a run.

- Pipeline stage "results" (after "toy_summary", toy runs only): `<run_dir>/results/toy_seed<seed>.json`
  holds the rows of `toy/summary.csv` with the commit and config hash of the run that wrote it.
- `python -m t2i_debias.report.readme_block --from docs/results/toy_seed0.json --readme README.md`
  writes the table (exactly `toy/summary.md`, by `toyworld.summary.format_table`) between the
  README's markers `<!-- toy-results:begin -->` and `<!-- toy-results:end -->`, with the commit and
  config hash beside it; `--check` only says whether the block is up to date (exit 1 if not).

To refresh the README after `make demo`: copy `runs/toy/results/toy_seed0.json` to `docs/results/`
and run the command above. tests/test_readme_block.py checks the README against the committed file.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from t2i_debias.csv_cells import unescape_frame

log = logging.getLogger(__name__)

BEGIN = "<!-- toy-results:begin -->"
END = "<!-- toy-results:end -->"
VERSION = 1
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = Path("docs/results/toy_seed0.json")
DEFAULT_README = Path("README.md")
# What each row of the toy table is (names not listed are SOTA baselines, named as in sota/comparison.md).
ROW_NAMES: dict[str, str] = {
    "base": "the toy base model (`toy:base`)",
    "control": "the same fine-tune on the biased data only",
    "text": "ours, text encoder", "unet": "ours, U-Net", "both": "ours, text encoder + U-Net",
}


class ReadmeError(ValueError):
    """A README or results file this module cannot use; the message names the file and the fix."""


# ----------------------------------------------------------------------------- provenance
def git_commit(root: Path = ROOT) -> str:
    """Short commit of the repository at `root`, `+dirty` when tracked files differ; "unknown" outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=root, capture_output=True).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def config_hash(cfg: Any) -> str:
    """Hash of the resolved config, without where the run folder lives ([run] root, name)."""
    from t2i_debias.runs import hash_obj

    d = cfg.to_dict()
    d["run"] = {k: v for k, v in d["run"].items() if k not in ("root", "name")}
    return hash_obj(d)[:12]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return _clean(v.item())
    return v


def results_from_summary(cfg: Any, summary_csv: Path) -> dict[str, Any]:
    """The results file's content: the rows of toy/summary.csv, the commit, config hash and run settings."""
    import pandas as pd

    df = unescape_frame(pd.read_csv(summary_csv, keep_default_na=True))
    if df.empty or "model" not in df.columns:
        raise ReadmeError(f"{summary_csv}: no model rows; rerun the toy_summary stage (--only toy_summary --force)")
    return {"version": VERSION, "commit": git_commit(), "config": cfg.source,
            "config_hash": config_hash(cfg), "toy_seed": cfg.toy.seed,
            "images_per_prompt": cfg.generate.images_per_prompt,
            "columns": list(df.columns),
            "rows": [{k: _clean(v) for k, v in r.items()} for r in df.to_dict("records")]}


def load_results(path: Path) -> dict[str, Any]:
    """A results file, checked for the fields the block needs."""
    try:
        res = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReadmeError(f"{path} not found: run `make demo`, then copy runs/toy/results/{Path(path).name} "
                          f"there") from None
    except json.JSONDecodeError as e:
        raise ReadmeError(f"{path}: not valid JSON ({e}); copy it again from runs/toy/results/") from None
    missing = [k for k in ("version", "commit", "config_hash", "columns", "rows") if k not in res]
    if missing:
        raise ReadmeError(f"{path}: missing {missing}; write it with the pipeline's 'results' stage")
    if res["version"] != VERSION:
        raise ReadmeError(f"{path}: results version {res['version']}, this code reads {VERSION}; rerun make demo")
    return res


# ----------------------------------------------------------------------------- the block
def render_block(res: dict[str, Any], source: str) -> str:
    """The README block (markers included): provenance, then the table exactly as toy/summary.md."""
    import pandas as pd

    from t2i_debias.toyworld.summary import format_table

    df = pd.DataFrame(res["rows"], columns=res["columns"])
    names = [n for n in df["model"] if n in ROW_NAMES]
    legend = "; ".join(f"`{n}`: {ROW_NAMES[n]}" for n in names)
    head = (f"<!-- generated by `python -m t2i_debias.report.readme_block --from {source}`; do not edit by hand -->\n"
            f"From `{source}`: commit `{res['commit']}`, config `{res.get('config', '?')}` (hash "
            f"`{res['config_hash']}`), toy seed {res.get('toy_seed', '?')}, {res.get('images_per_prompt', '?')} "
            f"images per occupation, the same seeds for every model. Rows: {legend}; the others are the SOTA "
            "baselines on the same base.\n")
    return f"{BEGIN}\n{head}\n{format_table(df)}{END}"


def pending_block(source: str) -> str:
    """The block while no results file is committed: how to make one, and no number."""
    return (f"{BEGIN}\n<!-- generated by `python -m t2i_debias.report.readme_block`; do not edit by hand -->\n"
            f"No measured table is committed yet (`{source}` is missing). After `make demo`, copy "
            "`runs/toy/results/toy_seed0.json` there and run "
            f"`python -m t2i_debias.report.readme_block --from {source}`.\n{END}")


def expected_block(results: Path, source: str | None = None) -> str:
    """What the README block must be: the table from `results`, or the pending note while it is absent."""
    source = source or results.as_posix()
    return render_block(load_results(results), source) if results.is_file() else pending_block(source)


def replace_block(text: str, block: str, where: str = "README") -> str:
    """`text` with the part from BEGIN to END (markers included) replaced by `block`."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ReadmeError(f"{where}: needs exactly one {BEGIN} followed by one {END} (put them where the toy "
                          "table goes)")
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + block + text[stop:]


def current_block(text: str, where: str = "README") -> str:
    """The block as it stands in `text` (markers included)."""
    replace_block(text, "", where)  # validates the markers
    return text[text.index(BEGIN):text.index(END) + len(END)]


def update_readme(results: Path, readme: Path, check: bool = False, source: str | None = None) -> bool:
    """Write (or with `check`, only compare) the block; True when the README already matched."""
    res = load_results(results)
    text = readme.read_text(encoding="utf-8")
    new = replace_block(text, render_block(res, source or results.as_posix()), str(readme))
    if new == text:
        return True
    if not check:
        from t2i_debias.runs import atomic_write_text

        atomic_write_text(readme, new)
    return False


# ----------------------------------------------------------------------------- pipeline stage
def results_path(cfg: Any) -> Path:
    """Where a toy run writes its results file (`docs/results/` holds the committed copy)."""
    return cfg.run_dir / "results" / f"toy_seed{cfg.toy.seed}.json"


def run_stage(cfg: Any, force: bool = False) -> None:
    """Pipeline stage "results" (after "toy_summary"): the results file of a toy run; a no-op otherwise."""
    if not cfg.toy.enabled:
        return
    from t2i_debias.runs import Stage, atomic_write_json
    from t2i_debias.runs import run_stage as run

    summary = cfg.run_dir / "toy" / "summary.csv"
    out = results_path(cfg)
    stage = Stage("results", out.parent, {"config_hash": config_hash(cfg), "commit": git_commit()}, [summary])

    def body(st: Stage) -> list[Path]:
        return [atomic_write_json(out, results_from_summary(cfg, summary))]

    run(stage, body, force=force, log=log.info)
    print(f"README numbers: {out} (to publish: cp {out} docs/results/ && "
          f"python -m t2i_debias.report.readme_block --from docs/results/{out.name})", flush=True)


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="results", type=Path, default=DEFAULT_RESULTS,
                   help="results file written by make demo (default: %(default)s)")
    p.add_argument("--readme", type=Path, default=DEFAULT_README, help="README to update (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="only check that the block is up to date (exit 1 if not)")
    args = p.parse_args(argv)
    try:
        same = update_readme(args.results, args.readme, check=args.check)
    except (ReadmeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.readme}: toy table {'up to date' if same else 'differs from ' + str(args.results)}")
        return 0 if same else 1
    print(f"{args.readme}: toy table {'already up to date' if same else 'written from ' + str(args.results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

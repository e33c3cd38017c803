"""`core.layout.RunLayout` names the run folder of DESIGN.md §6, and stages/ and report/ ask it for paths."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from t2i_debias.core.layout import STAGE_DIRS, RunLayout, scale_tag

ROOT = Path(__file__).resolve().parents[1]

# Every path of RunLayout("/r"), written out as DESIGN.md §6 names it (methods called with the arguments given).
KNOWN: dict[str, tuple[tuple, str]] = {
    "run_dir": ((), "/r"),
    "config_toml": ((), "/r/config.toml"),
    "report_html": ((), "/r/report.html"),
    "prompts_csv": ((), "/r/prompts.csv"),
    "mpii": ((), "/r/mpii"),
    "persons_csv": ((), "/r/mpii/persons.csv"),
    "missing_images": ((), "/r/mpii/missing_images.txt"),
    "load_report": ((), "/r/mpii/load_report.json"),
    "labels": ((), "/r/labels"),
    "labels_csv": ((), "/r/labels/labels.csv"),
    "analysis": ((), "/r/analysis"),
    "enriched": ((), "/r/enriched"),
    "models": ((), "/r/models"),
    "model": (("unet",), "/r/models/unet"),
    "prompts": ((), "/r/prompts"),
    "generated": ((), "/r/generated"),
    "generated_model": (("base",), "/r/generated/base"),
    "generated_metadata": (("base",), "/r/generated/base/metadata.csv"),
    "bias": ((), "/r/bias"),
    "bias_model": (("both",), "/r/bias/both"),
    "bias_summary": (("both",), "/r/bias/both/summary.json"),
    "bias_predictions": (("both",), "/r/bias/both/predictions.csv"),
    "bias_stale": ((), "/r/bias/stale.json"),
    "quality": ((), "/r/quality"),
    "quality_json": (("text",), "/r/quality/text.json"),
    "sota": ((), "/r/sota"),
    "sota_quality": ((), "/r/sota/quality"),
    "sota_skipped": ((), "/r/sota/skipped.json"),
    "comparison_csv": ((), "/r/sota/comparison.csv"),
    "comparison_md": ((), "/r/sota/comparison.md"),
    "methods_json": ((), "/r/sota/methods.json"),
    "sweep": ((), "/r/sweep"),
    "sweep_generated": (("base", 7.5), "/r/sweep/generated/base/g7.5"),
    "sweep_bias": (("unet", 1.0), "/r/sweep/bias/unet/g1"),
    "sweep_csv": ((), "/r/sweep/sweep.csv"),
    "sweep_plot": ((), "/r/sweep/bias_vs_guidance.png"),
    "report": ((), "/r/report"),
    "figure": ((), "/r/report/OursVsBaseline.png"),
    "toy": ((), "/r/toy"),
    "toy_summary_csv": ((), "/r/toy/summary.csv"),
    "toy_attribute_prompts": ((), "/r/toy/attribute_prompts.csv"),
    "toy_summary_md": ((), "/r/toy/summary.md"),
    "results": ((), "/r/results"),
    "toy_results": ((0,), "/r/results/toy_seed0.json"),
    "stage_dir": (("bias",), "/r/bias"),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_paths(name: str) -> None:
    args, want = KNOWN[name]
    got = getattr(RunLayout("/r"), name)
    assert (got(*args) if callable(got) else got) == Path(want)


def test_every_path_has_a_known_answer() -> None:
    """A path added to the layout gets its line in KNOWN (and in DESIGN.md §6)."""
    public = {n for n in dir(RunLayout) if not n.startswith("_")} | {"run_dir"}
    assert public == set(KNOWN)


def test_stage_dirs_follow_design() -> None:
    """Each stage folder is named as its stage, in the order of the report's Run table."""
    assert list(STAGE_DIRS) == ["mpii", "labels", "analysis", "enriched", "models", "prompts", "generated", "bias",
                                "quality", "sota", "report"]
    assert all(folder == stage for stage, folder in STAGE_DIRS.items())
    assert all(RunLayout("/r").stage_dir(s) == Path("/r", s) for s in STAGE_DIRS)


def test_relative_run_dir_stays_relative() -> None:
    lay = RunLayout("runs/demo")
    assert lay.run_dir == Path("runs/demo") and lay.generated_model("base") == Path("runs/demo/generated/base")
    assert lay == RunLayout(Path("runs/demo"))
    assert [scale_tag(g) for g in (1.0, 4, 7.5)] == ["g1", "g4", "g7.5"]


# ----------------------------------------------------------------------------- no folder literal left
TOP_LEVEL = {*STAGE_DIRS.values(), "sweep", "toy", "results", "config.toml", "prompts.csv", "report.html"}
CHECKED = ("t2i_debias",)
OWNER = "t2i_debias/core/layout.py"  # the one module that states the names


def _leading_text(node: ast.AST | None) -> str | None:
    """The text a string operand starts with (a plain string, or an f-string's first literal part)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def folder_literals(source: str, rel: str) -> list[str]:
    """`file:line` of every path join (`/`, `joinpath`, `Path(...)`, `os.path.join`) with an operand that
    starts with a run-folder name (`"generated"`, `"bias/x"`, `f"sweep/{n}"`): those paths belong to the layout."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            if _leading_text(getattr(node.left, "right", None)) == "docs":
                continue  # the repository's docs/results/, not a run folder
            operands = [node.left, node.right]
        elif isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Attribute) and node.func.attr in ("joinpath", "join"))
                or (isinstance(node.func, ast.Name) and node.func.id in ("Path", "PurePath"))):
            operands = list(node.args)
        else:
            continue
        for op in operands:
            text = _leading_text(op)
            if text is not None and text.split("/")[0] in TOP_LEVEL:
                out.append(f"{rel}:{node.lineno}: joins the run-folder literal {text!r}: use core.layout.RunLayout")
    return out


def test_no_run_folder_literal_outside_the_layout() -> None:
    found = []
    for folder in CHECKED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.relative_to(ROOT).as_posix() == OWNER:
                continue
            found += folder_literals(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert not found, "\n".join(found)


@pytest.mark.parametrize("code", ['run_dir / "generated" / name', 'cfg.run_dir / "bias"', 'root / "sweep/sweep.csv"',
                                  'run_dir / f"results/{n}.json"', 'run_dir.joinpath("models", m)',
                                  'Path(run_dir, "quality")', 'os.path.join(run_dir, "report.html")'])
def test_the_literal_check_can_fail(code: str) -> None:
    assert folder_literals(f"x = {code}\n", "m.py") == [f"m.py:1: joins the run-folder literal "
                                                          f"{_first_literal(code)!r}: use core.layout.RunLayout"]


@pytest.mark.parametrize("code", ['out_dir / "images"', 'lay.generated_model("base")', 'd / "summary.json"',
                                  '"generated" + suffix'])
def test_the_literal_check_passes_other_joins(code: str) -> None:
    assert folder_literals(f"x = {code}\n", "m.py") == []


def _first_literal(code: str) -> str:
    node = next(n for n in ast.walk(ast.parse(code)) if _leading_text(n) is not None)
    return str(_leading_text(node))


def test_the_repository_docs_folder_is_not_a_run_folder() -> None:
    assert folder_literals('x = ROOT / "docs" / "results" / "a.md"\n', "m.py") == []
    assert folder_literals('x = ROOT / "results" / "a.md"\n', "m.py") != []

"""Below stages/, a function takes the typed config section(s) it reads (`train: TrainSection`), not the whole config.

Checked over the source with `ast`: outside core/ (which defines and loads the Config) and stages/ and above, no
parameter is annotated `Config`, and none named `cfg` is annotated `Any`. The one place that passes the whole
config down is the model-resolver contract (`models.Resolver`): a plug-in's resolver reads its own section (the
toy world's `[toy]`), which models.py must not name; RESOLVER_CONTRACT lists those functions by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "t2i_debias"
ABOVE = ("core", "stages", "pipeline.py", "cli.py")  # may take the whole Config
RESOLVER_CONTRACT = {
    "t2i_debias/models.py": {"_tiny", "_shape", "resolve_model", "base_model"},
    "t2i_debias/toyworld/plugin.py": {"resolve_toy_model"},
    "t2i_debias/toyworld/base_model.py": {"resolve"},
}


def _names(node: ast.expr | None) -> set[str]:
    """Every bare name in an annotation (`Config | None` -> {"Config", "None"}; a string annotation parsed)."""
    if node is None:
        return set()
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        node = ast.parse(node.value, mode="eval").body
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def whole_config_params(source: str, rel: str) -> list[str]:
    """`file:line` of each parameter that takes the whole config below stages/ (outside the resolver contract)."""
    allowed = RESOLVER_CONTRACT.get(rel, set())
    out = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or fn.name in allowed:
            continue
        a = fn.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
            names = _names(arg.annotation)
            if "Config" in names or (arg.arg == "cfg" and "Any" in names):
                out.append(f"{rel}:{arg.lineno}: {fn.name}({arg.arg}) takes the whole config: pass the section it reads")
    return out


def test_no_function_below_stages_takes_the_whole_config() -> None:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if path.relative_to(PKG).parts[0] in ABOVE:
            continue
        found += whole_config_params(path.read_text(encoding="utf-8"), rel)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("code", ["def f(cfg: Config): ...", "def f(x, cfg: Any = None): ...",
                                  "def f(*, c: 'Config | None'): ...", "def f(c: Optional[Config]): ..."])
def test_the_check_can_fail(code: str) -> None:
    assert len(whole_config_params(code, "t2i_debias/metrics/x.py")) == 1


def test_a_section_or_the_resolver_contract_passes() -> None:
    assert whole_config_params("def f(train: TrainSection, cfg: RunSection): ...", "t2i_debias/train/x.py") == []
    assert whole_config_params("def resolve_model(spec, cfg: Config | None = None): ...", "t2i_debias/models.py") == []
    assert whole_config_params("def resolve_model(spec, cfg: Config | None = None): ...", "t2i_debias/sampling.py")

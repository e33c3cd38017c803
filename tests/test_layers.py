"""House rules of the package's layout (docs/DESIGN.md, issue "One layer per concern"), checked over the source.

Every module of t2i_debias/ is parsed with `ast`. A reference to another module is an import (at module level
or inside a function) or a string constant that names a module of the package exactly, which covers
`importlib.import_module("t2i_debias.x")` and tables such as pipeline.STAGES. Each failure reads
`file:line: message`. No rule has an allowed exception.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "t2i_debias"

# Module prefix -> layer, ground up: core -> tiny -> models -> data, labels, sampling -> augment, metrics ->
# train, baselines -> report -> toyworld -> stages -> pipeline, cli (docs/DESIGN.md §11). shapes sits with tiny
# and plots with report: they draw and build the same things.
LAYERS: dict[str, int] = {
    PKG: 0, f"{PKG}.core": 0, f"{PKG}.tiny": 1, f"{PKG}.shapes": 1, f"{PKG}.models": 2,
    f"{PKG}.data": 3, f"{PKG}.labels": 3, f"{PKG}.sampling": 3, f"{PKG}.augment": 4, f"{PKG}.metrics": 4,
    f"{PKG}.train": 5, f"{PKG}.baselines": 5, f"{PKG}.report": 6, f"{PKG}.plots": 6, f"{PKG}.toyworld": 7,
    f"{PKG}.stages": 8, f"{PKG}.pipeline": 9, f"{PKG}.cli": 9,
}
STAGE_USERS = (f"{PKG}.stages", f"{PKG}.pipeline", f"{PKG}.cli")
TOY = f"{PKG}.toyworld"
# Vocabularies stated once: (words, the modules allowed to state them). A literal tuple/list/set of strings
# holding every word, with at most two others ("base", "control"), is a restatement; longer literals are
# column schemas. Owners: core/options.py (modes, with the other option vocabularies), core/vocab.py
# (attributes), metrics/bias.py (metrics).
VOCABS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "mode": (frozenset({"text", "unet", "both"}), (f"{PKG}/core/options.py",)),
    "attribute": (frozenset({"gender", "race", "age_group"}), (f"{PKG}/core/vocab.py",)),
    "metric": (frozenset({"tvd", "pairwise", "kl", "entropy"}), (f"{PKG}/metrics/bias.py",)),
}


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of root/t2i_debias (a package is its __init__.py)."""
    out = {}
    for path in sorted((root / PKG).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def references(name: str, path: Path, known: dict[str, Path], strings_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) for every package module `name` imports or names in a string (only names: strings_only)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    refs = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if strings_only and isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Import):
            refs += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from .x import y` inside package a.b is a.b.x
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            refs += [(node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in known else base) for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known:
            refs.append((node.lineno, node.value))
    while any(m not in known and "." in m for _, m in refs):  # `import t2i_debias.x.y` of a name, not a module
        refs = [(n, m if m in known or "." not in m else m.rpartition(".")[0]) for n, m in refs]
    return sorted({(n, m) for n, m in refs if m in known and m != name})


def layer(name: str) -> int | None:
    """The layer of a module: its longest prefix in LAYERS (the bare package matches itself only)."""
    keys = [k for k in LAYERS if name == k or (k != PKG and name.startswith(k + "."))]
    return LAYERS[max(keys, key=len)] if keys else None


def stage_modules(known: dict[str, Path]) -> set[str]:
    """The stage modules: those under stages/ and (today) those pipeline.py names in strings (STAGES)."""
    pipeline = f"{PKG}.pipeline"
    named = {m for _, m in references(pipeline, known[pipeline], known, True)} if pipeline in known else set()
    return (named | {m for m in known if m.startswith(f"{PKG}.stages")}) - {PKG}


def layer_violations(root: Path) -> list[str]:
    """Rule 1: a module references only modules of its own layer or lower; every module has a layer."""
    known, out = modules(root), []
    for name, path in known.items():
        rel, mine = path.relative_to(root).as_posix(), layer(name)
        if mine is None:
            out.append(f"{rel}:1: {name} has no layer in LAYERS")
            continue
        out += [f"{rel}:{n}: layer {mine} ({name}) imports {m} of layer {layer(m)}"
                for n, m in references(name, path, known) if (layer(m) or 0) > mine]
    return out


def stage_violations(root: Path) -> list[str]:
    """Rule 2: only stages/, pipeline.py and cli.py reference a stage module."""
    known = modules(root)
    stages = stage_modules(known)
    return [f"{p.relative_to(root).as_posix()}:{n}: {name} imports the stage module {m}"
            for name, p in known.items() if not name.startswith(STAGE_USERS)
            for n, m in references(name, p, known) if m in stages]


def toy_violations(root: Path) -> list[str]:
    """Rule 3: no module below toyworld/ imports or names t2i_debias.toyworld (the toy world plugs in from above)."""
    known = modules(root)
    return [f"{p.relative_to(root).as_posix()}:{n}: {name} (below {TOY}) references {m}"
            for name, p in known.items() if (layer(name) or 0) < LAYERS[TOY]
            for n, m in references(name, p, known) if m == TOY or m.startswith(TOY + ".")]


def vocab_violations(root: Path) -> list[str]:
    """Rule 5: the mode, attribute and metric tuples are written once, in their owner module."""
    out = []
    for path in modules(root).values():
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Tuple | ast.List | ast.Set):
                continue
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            out += [f"{rel}:{node.lineno}: a second {kind} tuple {tuple(words)} (stated in {owners[0]})"
                    for kind, (vocab, owners) in VOCABS.items()
                    if rel not in owners and vocab <= set(words) and len(words) <= len(vocab) + 2]
    return out


def _check(violations: list[str]) -> None:
    assert not violations, f"{len(violations)} violations:\n" + "\n".join(violations)


def test_each_module_imports_its_own_layer_or_lower() -> None:
    _check(layer_violations(ROOT))


def test_only_stages_pipeline_and_cli_import_a_stage() -> None:
    _check(stage_violations(ROOT))


def test_nothing_below_the_toy_world_knows_it() -> None:
    _check(toy_violations(ROOT))


def test_mode_attribute_and_metric_tuples_are_stated_once() -> None:
    _check(vocab_violations(ROOT))


# ----------------------------------------------------------------------------- the checker on known trees
CLEAN = {
    "__init__.py": "",
    "core/__init__.py": "",
    "core/vocab.py": 'ATTRIBUTES = ["gender", "race", "age_group"]\n',
    "core/options.py": 'MODES = ("text", "unet", "both")\n',
    "metrics/__init__.py": "",
    "metrics/bias.py": 'from ..core import vocab\nMETRIC_NAMES = ("tvd", "pairwise", "kl", "entropy")\n',
    "metrics/paired.py": "from . import bias\nfrom t2i_debias.core.options import MODES\n",
    "labels/__init__.py": "",
    "labels/runner.py": 'COLUMNS = ("person_id", "image", "gender", "race", "age_group", "backend")  # a schema\n',
    "toyworld/__init__.py": "import t2i_debias.metrics.bias\n",
    "stages/__init__.py": "",
    "stages/toy.py": "from t2i_debias import toyworld\n\ndef run_stage(cfg):\n    return toyworld\n",
    "pipeline.py": 'import importlib\nSTAGES = [("toy", "t2i_debias.stages.toy")]\n',
    "cli.py": "from t2i_debias.stages import toy\n",
}


def _tree(root: Path, extra: dict[str, str]) -> Path:
    for rel, text in {**CLEAN, **extra}.items():
        (root / PKG / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / PKG / rel).write_text(text)
    return root


def test_a_clean_tree_passes_every_rule(tmp_path: Path) -> None:
    root = _tree(tmp_path, {})
    assert [f(root) for f in (layer_violations, stage_violations, toy_violations, vocab_violations)] == [[]] * 4


def test_each_rule_finds_its_violation_at_its_line(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "core/files.py": '"""Doc."""\nimport os\n\n\ndef f():\n    from ..metrics import bias\n',
        "labels/registry.py": 'import importlib\n\nB = importlib.import_module("t2i_debias.stages.toy")\n',
        "metrics/floor.py": 'PLUGIN = "t2i_debias.toyworld"\nORDER = ["base", "both", "unet", "text"]\n',
        "extra.py": "",
    })
    assert layer_violations(root) == [
        "t2i_debias/core/files.py:6: layer 0 (t2i_debias.core.files) imports t2i_debias.metrics.bias of layer 4",
        "t2i_debias/extra.py:1: t2i_debias.extra has no layer in LAYERS",
        "t2i_debias/labels/registry.py:3: layer 3 (t2i_debias.labels.registry) imports t2i_debias.stages.toy of layer 8",
        "t2i_debias/metrics/floor.py:1: layer 4 (t2i_debias.metrics.floor) imports t2i_debias.toyworld of layer 7"]
    assert stage_violations(root) == [
        "t2i_debias/labels/registry.py:3: t2i_debias.labels.registry imports the stage module t2i_debias.stages.toy"]
    assert toy_violations(root) == [
        "t2i_debias/metrics/floor.py:1: t2i_debias.metrics.floor (below t2i_debias.toyworld) references t2i_debias.toyworld"]
    assert vocab_violations(root) == [
        "t2i_debias/metrics/floor.py:2: a second mode tuple ('base', 'both', 'unet', 'text') (stated in t2i_debias/core/options.py)"]


def test_todays_stage_modules_are_the_ones_pipeline_names(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"pipeline.py": 'STAGES = [("bias", "t2i_debias.metrics.bias")]\n'})
    assert stage_violations(root) == [
        "t2i_debias/metrics/paired.py:1: t2i_debias.metrics.paired imports the stage module t2i_debias.metrics.bias",
        "t2i_debias/toyworld/__init__.py:1: t2i_debias.toyworld imports the stage module t2i_debias.metrics.bias"]

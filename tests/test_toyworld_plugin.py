"""The toy world plugs in from above: `register()` adds `toy:` and the "toy" backend; nothing below names it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Modules below the toy world that once named it and no longer do (the rest: tests/test_layers.py).
PLUGGED_OUT = ("models.py", "labels/registry.py", "core/threads.py")


def test_without_register_no_module_below_knows_the_toy_world() -> None:
    """In a fresh process, `toy:` is an unknown prefix and "toy" an unknown backend, until register()."""
    code = """
import sys
from t2i_debias import models
from t2i_debias.labels import registry
assert "toy:" not in models.RESOLVERS and "toy" not in registry.BACKENDS
assert not any(m.startswith("t2i_debias.toyworld") for m in sys.modules), "importing models/labels loaded the toy world"
try:
    models.resolve_model("toy:base")
except ValueError as e:
    assert "unknown model prefix 'toy:'" in str(e), e
else:
    raise AssertionError("toy:base resolved without the plug-in")
try:
    registry.race_classes("toy")
except ValueError as e:
    assert "known: deepface, clip" in str(e), e
else:
    raise AssertionError("the toy backend exists without the plug-in")
from t2i_debias.toyworld import plugin
plugin.register()
assert models.RESOLVERS["toy:"] is plugin.resolve_toy_model and "toy" in registry.BACKENDS
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split()[-1] == "ok", out.stderr


def test_register_is_idempotent_and_gives_the_toy_races() -> None:
    from t2i_debias.core.vocab import RACES
    from t2i_debias.labels import registry
    from t2i_debias.models import RESOLVERS
    from t2i_debias.toyworld import plugin
    from t2i_debias.toyworld.render import TOY_RACES

    plugin.register()
    before = (dict(RESOLVERS), dict(registry.BACKENDS))
    plugin.register()
    assert (dict(RESOLVERS), dict(registry.BACKENDS)) == before
    assert list(RESOLVERS) == ["tiny:", "shape:", "toy:"]
    assert registry.race_classes("toy") == TOY_RACES == ("white", "asian", "black")
    assert registry.race_classes("deepface") == registry.race_classes("clip") == RACES
    assert registry.race_classes("toy", ["a", "b"]) == ("a", "b")  # [analysis] race_classes wins
    with pytest.raises(ValueError, match="known: deepface, clip, toy"):
        registry.race_classes("nope")


def test_each_backend_entry_says_what_its_classifier_measures() -> None:
    """The registry's races / measures are read without building a classifier; they must be the class's own."""
    from t2i_debias.labels import registry
    from t2i_debias.labels.clip_backend import ClipClassifier
    from t2i_debias.labels.deepface_backend import DeepFaceClassifier
    from t2i_debias.toyworld import plugin
    from t2i_debias.toyworld.classifier import ToyClassifier

    plugin.register()
    for name, cls in (("deepface", DeepFaceClassifier), ("clip", ClipClassifier), ("toy", ToyClassifier)):
        assert registry.backend_measures(name) == tuple(cls.measures), name
    assert registry.BACKENDS["toy"].races == ToyClassifier.races


def test_modules_below_the_toy_world_do_not_name_it() -> None:
    for rel in PLUGGED_OUT:
        assert "toyworld" not in (ROOT / "t2i_debias" / rel).read_text(), rel


def test_stage_modules_are_named_as_the_stages() -> None:
    from t2i_debias.pipeline import STAGES

    modules = dict(STAGES)
    assert modules["toy"] == "t2i_debias.stages.toy" and modules["toy_summary"] == "t2i_debias.stages.toy_summary"


def test_toy_stages_do_nothing_outside_the_toy_world(tmp_path: Path) -> None:
    from t2i_debias.core.config import Config
    from t2i_debias.stages import toy, toy_summary

    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "r"
    assert not cfg.toy.enabled
    toy.run_stage(cfg)
    toy_summary.run_stage(cfg)
    assert not any(tmp_path.iterdir())

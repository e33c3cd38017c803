"""Config: one TOML file per run; unknown sections/keys and wrong types are errors naming key and file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from t2i_debias.core.config import SECTIONS, Config, load_config
from t2i_debias.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_defaults_without_file() -> None:
    cfg = load_config(None)
    assert cfg.run.base_model == "stabilityai/stable-diffusion-2-1"
    assert cfg.run_dir == Path("runs") / "demo"
    assert set(cfg.sections) == set(SECTIONS)


def test_file_overrides_defaults(tmp_path: Path) -> None:
    p = _write(tmp_path, '[run]\nname = "x"\nroot = "out"\n[train]\nmax_train_steps = 3\n'
                         'weights = {lang = 0.2, vision = 1}\nmodes = ["text"]\n[bias]\nci = 0.9\n')
    cfg = load_config(p)
    assert cfg.run_dir == Path("out") / "x"
    assert cfg.train.max_train_steps == 3
    assert cfg.train.weights == {"lang": 0.2, "vision": 1.0}
    assert isinstance(cfg.train.weights["vision"], float)
    assert cfg.train.modes == ["text"]
    assert cfg.bias.ci == 0.9
    assert cfg.source == str(p)
    # untouched fields keep their defaults
    assert cfg.train.learning_rate == 1e-5


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "[train]\nmax_train_step = 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "max_train_step" in msg and str(p) in msg and "[train]" in msg


def test_unknown_section_names_section_and_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "[trian]\nx = 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "trian" in str(e.value) and str(p) in str(e.value)


def test_top_level_key_is_rejected(tmp_path: Path) -> None:
    p = _write(tmp_path, "name = 1\n")
    with pytest.raises(ConfigError, match="name"):
        load_config(p)


@pytest.mark.parametrize(
    "toml, needle",
    [
        ('[train]\nmax_train_steps = "ten"\n', "expected an integer"),
        ("[train]\nmax_train_steps = 1.5\n", "expected an integer"),
        ("[train]\nmax_train_steps = true\n", "expected an integer"),
        ('[train]\nlearning_rate = "fast"\n', "expected a number"),
        ("[run]\nsmoke = 1\n", "expected true/false"),
        ("[run]\nname = 3\n", "expected a string"),
        ('[train]\nmodes = "text"\n', "expected a list"),
        ("[train]\nmodes = [1]\n", "expected a string"),
        ("[train]\nweights = 3\n", "expected a table"),
        ('[train]\nweights = {lang = "x"}\n', "expected a number"),
    ],
)
def test_type_errors(tmp_path: Path, toml: str, needle: str) -> None:
    p = _write(tmp_path, toml)
    with pytest.raises(ConfigError, match=needle) as e:
        load_config(p)
    assert str(p) in str(e.value)


def test_missing_and_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    p = _write(tmp_path, "[run\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_save_round_trips(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, '[run]\nname = "rt"\n[train]\nweights = {lang = 0.5}\n'))
    out = cfg.save(tmp_path / "saved.toml")
    back = load_config(out)
    assert back.to_dict() == cfg.to_dict()
    assert tomllib.loads(out.read_text())["run"]["name"] == "rt"


def test_section_dict_hash_changes_only_with_its_sections() -> None:
    from t2i_debias.core.files import hash_obj

    a, b = Config(), Config()
    b.train.max_train_steps = 7
    assert hash_obj(a.section_dict("bias")) == hash_obj(b.section_dict("bias"))
    assert hash_obj(a.section_dict("train")) != hash_obj(b.section_dict("train"))


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    """Every config the project ships loads and validates: no name of a model, mode or method it lacks."""
    from t2i_debias.core.options import validate

    assert {"smoke.toml", "toy.toml"} <= {f.name for f in (ROOT / "configs").glob("*.toml")}
    validate(load_config(path))


def test_smoke_config_is_tiny() -> None:
    cfg = load_config(ROOT / "configs" / "smoke.toml")
    assert cfg.run.smoke is True
    assert cfg.generate.images_per_prompt <= 4 and cfg.generate.num_inference_steps <= 3
    assert cfg.train.max_train_steps <= 3 and cfg.train.resolution <= 64
    assert cfg.augment.num_inference_steps <= 3 and cfg.augment.resolution <= 64
    assert cfg.bias.n_bootstrap <= 200

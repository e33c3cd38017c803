"""Fault injection, model specs: a missing local path and an offline hub id say what to do (issue 13, defect 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2i_debias.core.errors import MissingInputError
from t2i_debias.models import looks_like_path, resolve_model


@pytest.mark.parametrize("spec", ["./sd-2-1", "/data/sd-2-1-typo", "~/models/sd", "runs/x/models/both",
                                  "models/both/", "weights.safetensors"])
def test_a_missing_local_path_says_no_such_folder(spec: str) -> None:
    with pytest.raises(MissingInputError) as e:
        resolve_model(spec)
    msg = str(e.value)
    assert msg.startswith(f"no such folder: {spec} (looked for ")
    assert str(Path(spec).expanduser().resolve()) in msg and "huggingface.co" not in msg


def test_an_existing_folder_resolves(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_an_uncached_hub_id_offline_says_how_to_download(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingInputError) as e:
        resolve_model("someorg/not-downloaded-model")
    msg = str(e.value)
    assert "huggingface-cli download someorg/not-downloaded-model" in msg and "local pipeline folder" in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: from_pretrained may download it
    assert resolve_model("someorg/not-downloaded-model") == "someorg/not-downloaded-model"


def test_hub_ids_are_not_paths() -> None:
    assert not looks_like_path("stabilityai/stable-diffusion-2-1") and not looks_like_path("gpt2")

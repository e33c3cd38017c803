"""One TOML file describes a run. Each `[section]` maps onto a dataclass below.

Precedence: dataclass defaults < config file < command-line flags. An unknown section or key is an
error that names the key and the file, so a typo never silently falls back to a default.
Each section is owned by one stage; add a field to its dataclass to expose a new option everywhere
(TOML, `--help`, manifests).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
import tomllib


class ConfigError(ValueError):
    """A config file or flag that cannot be used; the message names the file and the key."""


@dataclass
class RunSection:
    """Where the run lives and what is shared by every stage."""

    name: str = "demo"
    root: str = "runs"  # the run folder is <root>/<name>
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    base_model: str = "stabilityai/stable-diffusion-2-1"  # hub id or local pipeline folder
    smoke: bool = False  # tiny offline models (t2i_debias.tiny) instead of base_model


@dataclass
class MpiiSection:
    """MPII Human Pose loading (issue: MPII stage)."""

    mat_file: str = "mpii_dataset/mpii_human_pose_v1_u12_1.mat"
    images_dir: str = "mpii_dataset/images"
    split: str = "train"  # train | test | all
    occupations_only: bool = True
    strict: bool = False  # missing images are fatal
    occupation_map: str = ""  # CSV (activity, category, occupation); empty = the packaged map


@dataclass
class LabelsSection:
    """Demographic labelling of people (MPII) and of generated images."""

    backend: str = "deepface"  # deepface | clip | toy
    detector: str = "opencv"
    fallback_skip: bool = True  # no face found on a head crop -> retry with detector 'skip'
    margin: float = 1.0  # head-box widths added on each side of the crop
    batch_size: int = 32
    clip_model: str = "openai/clip-vit-large-patch14"


@dataclass
class AnalysisSection:
    """Dataset analysis."""

    min_count: int = 1  # occupations with fewer labelled people are left out of plots


@dataclass
class AugmentSection:
    """Counterfactual triplets (enriched/)."""

    generator: str = ""  # diffusers model id/path; empty = run.base_model
    anchor_template: str = "a photo of a {occupation}"
    resolution: int = 512
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    batch_size: int = 4
    verify_attributes: bool = False
    max_tries: int = 3
    change_age: bool = False
    max_triplets: int = 0  # 0 = all


@dataclass
class TrainSection:
    """Contrastive fine-tuning (DESIGN.md §2)."""

    schedule: str = "sequential"  # sequential (text -> unet -> both) | joint (both only)
    modes: list[str] = field(default_factory=lambda: ["text", "unet", "both"])
    resolution: int = 512
    train_batch_size: int = 4
    max_train_steps: int = 1000
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # no | fp16 | bf16
    max_grad_norm: float = 1.0
    checkpointing_steps: int = 500
    use_ema: bool = False
    lora_rank: int = 0
    independent_noise: bool = False
    denoise_caption: str = "positive"  # positive | anchor
    lang_similarity: str = "tokens"  # tokens | pooled
    snr_gamma: float = 0.0  # 0 = off
    # Loss weights; empty = the mode's reference weights (DESIGN.md §2). Keys: denoise, lang, vision, preserve.
    weights: dict[str, float] = field(default_factory=dict)


@dataclass
class PromptsSection:
    """Evaluation prompts (prompts.csv)."""

    occupations: str = "default"  # default | mpii | path to a text/CSV file
    templates: list[str] = field(default_factory=lambda: ["Professional photo of a {occupation}"])
    heldout: list[str] = field(default_factory=list)


@dataclass
class GenerateSection:
    """Seeded, batched image generation."""

    images_per_prompt: int = 100
    base_seed: int = 0
    batch_size: int = 8
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    resolution: int = 0  # 0 = the model's default


@dataclass
class BiasSection:
    """Bias metrics (DESIGN.md §3)."""

    n_bootstrap: int = 1000
    ci: float = 0.95


@dataclass
class QualitySection:
    """FID / KID / CLIP-T / CLIP-I (DESIGN.md §4)."""

    reference: str = ""  # image folder or stats .npz; empty = skip FID/KID
    clip_model: str = "openai/clip-vit-large-patch14"  # transformers id/path or open_clip:ARCH/PRETRAINED
    fid_features: int = 2048
    kid_subset_size: int = 50


@dataclass
class SotaSection:
    """Baselines compared on the same base model (DESIGN.md §5)."""

    methods: list[str] = field(
        default_factory=lambda: ["base", "ethical_intervention", "debiasvl", "fair_diffusion", "uce"]
    )
    shen2024_dir: str = ""


@dataclass
class ReportSection:
    """report.html and the OursVsBaseline figure."""

    figure_occupations: list[str] = field(default_factory=list)  # empty = first 4 prompts
    figure_images: int = 4


@dataclass
class ToySection:
    """The toy world (t2i_debias.toyworld)."""

    enabled: bool = False


SECTIONS: dict[str, type] = {
    "run": RunSection,
    "mpii": MpiiSection,
    "labels": LabelsSection,
    "analysis": AnalysisSection,
    "augment": AugmentSection,
    "train": TrainSection,
    "prompts": PromptsSection,
    "generate": GenerateSection,
    "bias": BiasSection,
    "quality": QualitySection,
    "sota": SotaSection,
    "report": ReportSection,
    "toy": ToySection,
}


@dataclass
class Config:
    """A resolved run configuration: one dataclass instance per section."""

    sections: dict[str, Any] = field(default_factory=lambda: {k: v() for k, v in SECTIONS.items()})
    source: str = "<defaults>"

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {k: dataclasses.asdict(v) for k, v in self.sections.items()}

    def section_dict(self, *names: str) -> dict[str, Any]:
        """The named sections as plain dicts: the config hash of a stage is taken over these."""
        return {n: dataclasses.asdict(self.sections[n]) for n in names}

    @property
    def run_dir(self) -> Path:
        return Path(self.run.root) / self.run.name

    def save(self, path: str | Path) -> Path:
        """Write the resolved config as TOML, atomically."""
        from t2i_debias.runs import atomic_write_text

        return atomic_write_text(path, tomli_w.dumps(_drop_none(self.to_dict())))


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_drop_none(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a section dataclass."""
    return typing.get_type_hints(cls)


def coerce(value: Any, typ: Any, where: str) -> Any:
    """Check/convert one value to a field's type, naming `where` in the error."""
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin is list:
        (inner,) = typing.get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, vt = typing.get_args(typ)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {str(k): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    return value


def apply_table(cfg: Config, table: dict[str, Any], source: str) -> Config:
    """Merge a parsed TOML table into `cfg`, rejecting unknown sections and keys."""
    for sec_name, values in table.items():
        if sec_name not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{sec_name}]; known sections: {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{sec_name}] must be a table")
        cls = SECTIONS[sec_name]
        types = field_types(cls)
        sec = cfg.sections[sec_name]
        for key, value in values.items():
            if key not in types:
                raise ConfigError(
                    f"{source}: unknown key '{key}' in [{sec_name}]; known keys: {', '.join(types)}"
                )
            setattr(sec, key, coerce(value, types[key], f"{source}: [{sec_name}] {key}"))
    return cfg


def load_config(path: str | Path | None = None) -> Config:
    """Defaults, overridden by the TOML file at `path` (if any)."""
    cfg = Config()
    if path is None:
        return cfg
    p = Path(path)
    try:
        table = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {p}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    cfg.source = str(p)
    return apply_table(cfg, table, str(p))

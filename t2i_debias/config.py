"""One TOML file describes a run. Each `[section]` maps onto a dataclass below.

Precedence: dataclass defaults < config file < command-line flags. An unknown section or key is an
error that names the key and the file, so a typo never silently falls back to a default.
Each section is owned by one stage; add a field to its dataclass to expose a new option everywhere
(TOML, `--help`, manifests).
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w


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
    reader: str = "fast"  # fast (t2i_debias.data.matreader) | scipy (scipy.io.loadmat)


@dataclass
class LabelsSection:
    """Demographic labelling of people (MPII) and of generated images."""

    backend: str = "deepface"  # deepface | clip | toy
    detector: str = "opencv"  # any DeepFace detector_backend (opencv, retinaface, mtcnn, ..., skip)
    fallback_skip: bool = True  # detector finds no face in a head crop -> the whole crop, as detector 'skip'
    multiple_faces: str = "skip"  # several faces at the head box / in a whole image: skip (status) | largest
    align: bool = True  # DeepFace face alignment after detection
    margin: float = 1.0  # head-box widths (x) / heights (y) added on each side of the crop
    batch_size: int = 32
    clip_model: str = "openai/clip-vit-large-patch14"  # transformers id/path | open_clip:ARCH/PRETRAINED | tiny:clip
    clip_template: str = "a photo of a {label}"  # label prompt of the clip backend


@dataclass
class AnalysisSection:
    """Dataset analysis."""

    min_count: int = 1  # occupations with fewer labelled people are left out of plots
    race_classes: list[str] = field(default_factory=list)  # empty = DeepFace's six (the toy backend's for toy)


@dataclass
class AugmentSection:
    """Counterfactual triplets (enriched/)."""

    generator: str = ""  # diffusers model id/path (or tiny:sd); empty = run.base_model
    anchor_template: str = "a photo of a {occupation}"  # neutral caption of the anchor
    # Captions naming the demographics ({person} = "Asian woman", ...); articles are fixed automatically.
    attribute_template: str = "a photo of a {person} working as a {occupation}"
    generation_template: str = (
        "a photo of the face of a {person} working as a {occupation}, looking at the camera, clearly visible face"
    )
    race_words: dict[str, str] = field(default_factory=dict)  # override race renderings, e.g. latino hispanic=Latino
    age_in_captions: bool = False  # name the age group ("a young Asian woman"); on when change_age
    resolution: int = 512  # anchor crops and generated images are resolution x resolution
    crop_scale: float = 1.0  # anchor crop side = crop_scale * scale * 200 px (MPII scale: person height / 200 px)
    crop_shift: float = 0.3  # crop centre = head-box centre moved down by crop_shift * side
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    batch_size: int = 4  # images per generator call
    dtype: str = "auto"  # auto (fp16 on cuda, fp32 on cpu) | float32 | float16 | bfloat16
    verify_attributes: bool = False  # classify generated images (labels backend) and retry until they agree
    max_tries: int = 3
    change_age: bool = False  # positives get the least-represented other adult age group
    max_triplets: int = 0  # 0 = all
    races: list[str] = field(default_factory=list)  # races a positive may take; empty = all six


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
    resume_from_checkpoint: str = "latest"  # latest | a checkpoint folder | "" (start fresh)
    checkpoints_total_limit: int = 2  # keep the newest N checkpoints; 0 = keep all
    adam_weight_decay: float = 1e-2
    ema_decay: float = 0.9999
    batch_unet_passes: bool = True  # one U-Net call for the triplet's passes (False saves memory)
    dataloader_num_workers: int = 0
    # Non-occupation prompts for the `preserve` loss (used only when its weight > 0).
    preserve_prompts: list[str] = field(default_factory=lambda: [
        "a photo of a dog", "a bowl of fruit on a table", "a mountain landscape at sunset",
        "a red car parked on a street", "a cup of coffee", "a city skyline at night",
    ])


@dataclass
class PromptsSection:
    """Evaluation prompts (prompts.csv)."""

    occupations: str = "default"  # default (reference's 25) | mpii (the MPII occupation map) | path to a .txt/.csv
    # Each occupation is crossed with each template; the reference's face template is
    # "Professional photo of the face of a {occupation}".
    templates: list[str] = field(default_factory=lambda: ["Professional photo of a {occupation}"])
    heldout: list[str] = field(default_factory=list)  # occupations kept out of fine-tuning (split=heldout)


@dataclass
class GenerateSection:
    """Seeded, batched image generation."""

    images_per_prompt: int = 100
    base_seed: int = 0
    batch_size: int = 8
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    resolution: int = 0  # 0 = the model's default
    dtype: str = "auto"  # auto (float16 on CUDA, float32 on CPU) | float32 | float16 | bfloat16
    # Models to generate from, as NAME=SPEC (hub id, pipeline folder, or LoRA folder applied on the base);
    # empty = "base" plus every trained mode folder found under <run_dir>/models/.
    models: list[str] = field(default_factory=list)


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
    kid_subset_size: int = 50  # capped at the number of images
    kid_subsets: int = 100
    batch_size: int = 32
    # auto = torch-fidelity's real Inception weights (the random offline ones only under run.smoke);
    # random = always the offline random-weight Inception (toy/demo runs without downloads).
    inception: str = "auto"


@dataclass
class SotaSection:
    """Baselines compared on the same base model (DESIGN.md §5)."""

    # Baselines (t2i_debias.baselines); "ours" (each trained mode under models/) is always added.
    methods: list[str] = field(
        default_factory=lambda: ["base", "ethical_intervention", "debiasvl", "fair_diffusion", "uce", "shen2024"]
    )
    shen2024_dir: str = ""  # folder with text_encoder_lora_EMA.pth + unet_lora_EMA.pth (SD 1.5 only)
    debiasvl_lambda: float = 500.0
    fair_diffusion_edit_guidance: float = 4.0
    uce_iterations: int = 10  # weight-tuning rounds (generate, classify, edit); authors: up to 30
    uce_samples: int = 20  # images per occupation and round
    uce_steps: int = 20  # inference steps of those images


@dataclass
class ReportSection:
    """report.html and the OursVsBaseline figure."""

    figure_occupations: list[str] = field(default_factory=list)  # empty = first 4 prompts
    figure_images: int = 4
    figure_base: str = "base"  # generated/<model> shown in the top row
    figure_ours: str = ""  # bottom row; empty = the last trained mode found (both > unet > text)


@dataclass
class ToySection:
    """The toy world (t2i_debias.toyworld): a CPU-sized world with a planted bias, for `make demo`."""

    enabled: bool = False  # write the toy MPII data + train/cache the toy models before the stages run
    seed: int = 0  # seed of the toy population and of the base model's training
    n_per_occupation: int = 300  # people per occupation in the biased toy data (and the base training set)
    base_steps: int = 1500  # training steps of the toy base model (U-Net + text encoder, from scratch)
    vae_steps: int = 400  # training steps of the toy VAE (shared by every seed)
    control: bool = True  # also train the biased-data control (models/control) for the demo table


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

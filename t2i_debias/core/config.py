"""One TOML file describes a run. Each `[section]` maps onto a dataclass below.

Precedence: dataclass defaults < presets (presets.py) < config file < command-line flags. An unknown
section or key is an error that names the key and the file, so a typo never silently falls back to a
default; every value is then checked once, at load (core.options.validate).
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

from t2i_debias.core.errors import ConfigError
from t2i_debias.core.options import MODES, SOTA_METHODS, validate
from t2i_debias.core.presets import apply_presets


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
    # several faces at the head box / in a whole image: skip (status) | largest | first (DeepFace's order, upstream)
    multiple_faces: str = "skip"
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
    # The generator's own settings, independent of the base model's ([generate]): e.g. SDXL at 1024 px.
    generator_resolution: int = 0  # images are generated at this size, then resized to resolution; 0 = resolution
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    batch_size: int = 4  # images per generator call
    dtype: str = "auto"  # auto (fp16 on cuda, fp32 on cpu) | float32 | float16 | bfloat16
    # Classify each generated image (labels backend) and retry with a fresh seed until it shows what was asked.
    verify_attributes: bool = True
    max_tries: int = 3  # tries per generated member (seed, seed+1, ...) before it counts as unverified
    # drop: a triplet with an unverified member goes to enriched/_rejected.csv, not to metadata.jsonl;
    # keep: it is written, its unverified member captioned from what was measured (neutral if nothing was).
    on_unverified: str = "drop"  # drop | keep ("drop" needs verify_attributes)
    # none | opposite_gender: pipeline negative_prompt = the member's generation prompt with the other gender.
    negative_prompt: str = "none"
    retry_guidance_scale: float = 0.0  # > 0: guidance scale of tries 2.. (0 = guidance_scale every try)
    balance_band: list[float] = field(default_factory=lambda: [0.4, 0.6])  # warn when a pool's male share is outside
    min_written_rate: float = 0.9  # warn when fewer of an occupation's planned triplets are written
    change_age: bool = False  # positives get the least-represented other adult age group
    max_triplets: int = 0  # 0 = all
    races: list[str] = field(default_factory=list)  # races a positive may take; empty = all six


@dataclass
class TrainSection:
    """Contrastive fine-tuning (DESIGN.md §2). `preset` fills every option it names (core.presets.TRAIN_PRESETS)
    that the file or the flags do not give, so an explicit option always wins over its preset."""

    preset: str = ""  # "" | reference (upstream's recipe) | recommended (what the ablation found best)
    schedule: str = "sequential"  # sequential (text -> unet -> both) | joint (both only)
    modes: list[str] = field(default_factory=lambda: list(MODES))
    resolution: int = 512
    train_batch_size: int = 4
    max_train_steps: int = 1000
    num_train_epochs: int = 0  # > 0: train this many passes over the samples instead of max_train_steps
    learning_rate: float = 1e-5
    mode_learning_rates: dict[str, float] = field(default_factory=dict)  # per mode, e.g. both = 2e-8
    lr_scheduler: str = "constant"  # any diffusers get_scheduler name; warm-up needs a *_with_warmup/decay one
    lr_warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # no | fp16 | bf16 | auto (fp16 on CUDA, else no)
    max_grad_norm: float = 1.0
    checkpointing_steps: int = 500
    snapshot_steps: list[int] = field(default_factory=list)  # also save a loadable model at these steps (step-N/)
    use_ema: bool = False
    lora_rank: int = 0
    independent_noise: bool = False
    input_perturbation: float = 0.0  # noisy latents use ε + γ·ξ, the target stays ε (diffusers' option)
    random_flip: bool = False  # flip training images horizontally with p = 0.5
    # What is denoised (DESIGN.md §2): members positive | anchor | both, under the caption own | neutral |
    # measured (naming what the image shows); attribute_share of samples take the attribute caption instead,
    # caption_dropout the empty caption.
    denoise_members: str = "positive"
    denoise_caption: str = "own"  # own | neutral | measured ("positive" / "anchor": old names of own / neutral)
    attribute_share: float = 0.0
    caption_dropout: float = 0.0
    verified_only: bool = True  # never use a member whose image failed the attribute check
    balance: str = "none"  # none | cell: every (occupation, *balance_by) cell gets the same sampling weight
    balance_by: list[str] = field(default_factory=lambda: ["gender"])  # gender and/or race
    # > 0: denoise trains the guided prediction ε_u + w·(ε_c − ε_u) at w = guidance_target, plus
    # uncond_weight · MSE(ε_u, ε); -1 = the evaluation guidance ([generate] guidance_scale); 0 = off.
    guidance_target: float = 0.0
    uncond_weight: float = 1.0
    lang_similarity: str = "tokens"  # tokens | pooled
    vision_reduction: str = "triplet"  # triplet (each MSE per triplet) | batch (upstream: over the batch)
    snr_gamma: float = 0.0  # 0 = off
    # Loss weights; empty = the mode's reference weights (DESIGN.md §2). Keys: core.options.LOSS_NAMES.
    weights: dict[str, float] = field(default_factory=dict)
    control: bool = False  # also train models/control: the same options on the biased anchors only
    resume_from_checkpoint: str = "latest"  # latest | a checkpoint folder | "" (start fresh)
    checkpoints_total_limit: int = 2  # keep the newest N checkpoints; 0 = keep all
    adam_weight_decay: float = 1e-2
    ema_decay: float = 0.9999
    batch_unet_passes: bool = True  # one U-Net call for the triplet's passes (False saves memory)
    dataloader_num_workers: int = 0
    report_to: str = "none"  # none | tensorboard | wandb (accelerate trackers: losses, lr, sample images)
    log_images_every: int = 0  # log sample images of log_image_prompts every N steps; 0 = never
    log_image_prompts: list[str] = field(default_factory=lambda: ["a photo of a doctor", "a photo of a nurse"])
    # Non-occupation prompts for the `preserve` loss (used only when its weight > 0).
    preserve_prompts: list[str] = field(default_factory=lambda: [
        "a photo of a dog", "a bowl of fruit on a table", "a mountain landscape at sunset",
        "a red car parked on a street", "a cup of coffee", "a city skyline at night",
    ])


@dataclass
class PromptsSection:
    """Evaluation prompts (prompts.csv)."""

    # "" (our defaults) | upstream (the reference implementation's protocol, t2i_debias.core.presets; DESIGN.md §10).
    # A preset sets options in several sections; an option given in the file or as a flag wins.
    preset: str = ""
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
    # Noise floor (metrics/floor.py): exact up to this many count vectors, else a seeded Monte Carlo.
    floor_exact_max: int = 200_000
    floor_draws: int = 20_000
    # Paired bootstrap of (model - base): prompts_and_seeds (resample both) | seeds (prompt set fixed).
    paired_resample: str = "prompts_and_seeds"
    # Guidance sweep (t2i_debias.stages.sweep): every model again at each scale, same seeds; empty = off.
    guidance_sweep: list[float] = field(default_factory=list)
    sweep_images_per_prompt: int = 0  # 0 = generate.images_per_prompt
    sweep_models: list[str] = field(default_factory=list)  # empty = every evaluated model (base + trained)


@dataclass
class QualitySection:
    """FID / KID / CLIP-T / CLIP-I (DESIGN.md §4)."""

    reference: str = ""  # image folder or stats .npz; empty = skip FID/KID
    clip_model: str = "openai/clip-vit-large-patch14"  # transformers id/path or open_clip:ARCH/PRETRAINED
    clip_score: str = "x100_clamped"  # CLIP-T as 100*max(cos, 0) (torchmetrics) | raw_cosine (upstream)
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
    methods: list[str] = field(default_factory=lambda: list(SOTA_METHODS))
    shen2024_dir: str = ""  # folder with text_encoder_lora_EMA.pth + unet_lora_EMA.pth (SD 1.5 only)
    debiasvl_lambda: float = 500.0
    fair_diffusion_edit_guidance: float = 4.0
    uce_iterations: int = 10  # weight-tuning rounds (generate, classify, edit); authors: up to 30
    uce_samples: int = 20  # images per occupation and round
    uce_steps: int = 20  # inference steps of those images
    # Rows generated with different settings (guidance, sampler, steps, resolution, images per prompt)
    # are refused in one table unless this is set; they are then flagged.
    allow_mixed: bool = False


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
    base_steps: int = 2500  # training steps of the toy base model (U-Net + text encoder, from scratch)
    vae_steps: int = 400  # training steps of the toy VAE (shared by every seed)


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
    explicit: set[tuple[str, str]] = field(default_factory=set)  # (section, key) given in a file or flag

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
        from t2i_debias.core.files import atomic_write_text

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
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"{where}: {value!r} is too large for a number") from None
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
        for key, value in values.items():
            if key not in types:
                raise ConfigError(
                    f"{source}: unknown key '{key}' in [{sec_name}]; known keys: {', '.join(types)}"
                )
            set_option(cfg, sec_name, key, coerce(value, types[key], f"{source}: [{sec_name}] {key}"))
    return cfg


def set_option(cfg: Config, section: str, key: str, value: Any) -> None:
    """Set an option given in a file or as a flag and record it as explicit, so no preset overrides it."""
    setattr(cfg.sections[section], key, value)
    cfg.explicit.add((section, key))


def finish(cfg: Config, where: str) -> Config:
    """The last step of loading, once the file and the flags are in: apply the presets, then check everything."""
    apply_presets(cfg, cfg.explicit, where)
    return validate(cfg, where)


def load_config(path: str | Path | None = None, complete: bool = True) -> Config:
    """Defaults, overridden by the TOML file at `path` (if any), then its presets and every check (unless
    `complete` is False: the CLI adds its flags, then calls `finish`)."""
    cfg = Config()
    if path is None:
        return cfg
    p = Path(path)
    try:
        table = tomllib.loads(p.read_text(encoding="utf-8-sig"))  # -sig: a BOM (Windows editors) is dropped
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {p}") from e
    except IsADirectoryError as e:
        raise ConfigError(f"config path {p} is a folder, not a TOML file: pass the file (e.g. {p}/config.toml)") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    cfg.source = str(p)
    apply_table(cfg, table, str(p))
    return finish(cfg, str(p)) if complete else validate(cfg, complete=False)  # each value alone, before flags

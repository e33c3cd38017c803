"""Every path of a run folder (DESIGN.md §6), stated once: `RunLayout(run_dir).generated_model("base")`.

Stages, the report and the scripts ask the layout for a path instead of joining folder names themselves, so
a file of the run folder is named in one place. Names only: nothing here reads or writes a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The folder of each pipeline stage that writes one `_manifest.json` tree, in the order of the report's Run
# table. prompts/ holds only the manifest of prompts.csv, report/ that of report.html (and the figure).
STAGE_DIRS: dict[str, str] = {
    "mpii": "mpii",
    "labels": "labels",
    "analysis": "analysis",
    "enriched": "enriched",
    "models": "models",
    "prompts": "prompts",
    "generated": "generated",
    "bias": "bias",
    "quality": "quality",
    "sota": "sota",
    "report": "report",
}


# The files of one model's folder, wherever it lies: generated/<model>/ and sweep/generated/<model>/g<scale>/
# (sampling writes them); bias/<model>/ and sweep/bias/<model>/g<scale>/ (the bias stage writes them).
GENERATED_METADATA = "metadata.csv"
BIAS_PREDICTIONS = "predictions.csv"
BIAS_SUMMARY = "summary.json"
LABELS_CSV = "labels.csv"


def scale_tag(scale: float) -> str:
    """Folder name of one guidance scale of the sweep: 1.0 -> "g1", 7.5 -> "g7.5"."""
    return f"g{float(scale):g}"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder; `run_dir` (a str or a path) is kept as given: relative stays relative."""

    run_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    def stage_dir(self, stage: str) -> Path:
        """The folder of a stage of `STAGE_DIRS` (KeyError for a stage without one)."""
        return self.run_dir / STAGE_DIRS[stage]

    # ------------------------------------------------------------------------- the run itself
    @property
    def config_toml(self) -> Path:
        """The resolved config of the run, saved by the pipeline."""
        return self.run_dir / "config.toml"

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"

    @property
    def prompts_csv(self) -> Path:
        return self.run_dir / "prompts.csv"

    # ------------------------------------------------------------------------- dataset stages
    @property
    def mpii(self) -> Path:
        return self.stage_dir("mpii")

    @property
    def persons_csv(self) -> Path:
        return self.mpii / "persons.csv"

    @property
    def missing_images(self) -> Path:
        return self.mpii / "missing_images.txt"

    @property
    def load_report(self) -> Path:
        return self.mpii / "load_report.json"

    @property
    def labels(self) -> Path:
        return self.stage_dir("labels")

    @property
    def labels_csv(self) -> Path:
        return self.labels / LABELS_CSV

    @property
    def analysis(self) -> Path:
        return self.stage_dir("analysis")

    @property
    def enriched(self) -> Path:
        """The training set (its files: `augment.schema`)."""
        return self.stage_dir("enriched")

    # ------------------------------------------------------------------------- models and prompts
    @property
    def models(self) -> Path:
        return self.stage_dir("models")

    def model(self, mode: str) -> Path:
        """models/<mode>/ (a trained mode, or "control")."""
        return self.models / mode

    @property
    def prompts(self) -> Path:
        """Folder of the prompts stage's manifest (prompts.csv itself is `prompts_csv`)."""
        return self.stage_dir("prompts")

    # ------------------------------------------------------------------------- evaluation
    @property
    def generated(self) -> Path:
        return self.stage_dir("generated")

    def generated_model(self, model: str) -> Path:
        return self.generated / model

    def generated_metadata(self, model: str) -> Path:
        return self.generated_model(model) / GENERATED_METADATA

    @property
    def bias(self) -> Path:
        return self.stage_dir("bias")

    def bias_model(self, model: str) -> Path:
        return self.bias / model

    def bias_summary(self, model: str) -> Path:
        return self.bias_model(model) / BIAS_SUMMARY

    def bias_predictions(self, model: str) -> Path:
        return self.bias_model(model) / BIAS_PREDICTIONS

    @property
    def bias_stale(self) -> Path:
        """Model folders the config does not train -> why (left out of the evaluation and the report)."""
        return self.bias / "stale.json"

    @property
    def quality(self) -> Path:
        return self.stage_dir("quality")

    def quality_json(self, model: str) -> Path:
        return self.quality / f"{model}.json"

    # ------------------------------------------------------------------------- SOTA comparison
    @property
    def sota(self) -> Path:
        return self.stage_dir("sota")

    @property
    def sota_quality(self) -> Path:
        """Folder of the SOTA stage's quality manifest (the scores themselves go to `quality`)."""
        return self.sota / "quality"

    @property
    def sota_skipped(self) -> Path:
        """Baselines that cannot run on this base -> why."""
        return self.sota / "skipped.json"

    @property
    def comparison_csv(self) -> Path:
        return self.sota / "comparison.csv"

    @property
    def comparison_md(self) -> Path:
        return self.sota / "comparison.md"

    @property
    def methods_json(self) -> Path:
        return self.sota / "methods.json"

    # ------------------------------------------------------------------------- guidance sweep
    @property
    def sweep(self) -> Path:
        return self.run_dir / "sweep"

    def sweep_generated(self, model: str, scale: float) -> Path:
        """sweep/generated/<model>/g<scale>/ (laid out as generated/<model>/)."""
        return self.sweep / "generated" / model / scale_tag(scale)

    def sweep_bias(self, model: str, scale: float) -> Path:
        """sweep/bias/<model>/g<scale>/ (laid out as bias/<model>/)."""
        return self.sweep / "bias" / model / scale_tag(scale)

    @property
    def sweep_csv(self) -> Path:
        return self.sweep / "sweep.csv"

    @property
    def sweep_plot(self) -> Path:
        return self.sweep / "bias_vs_guidance.png"

    # ------------------------------------------------------------------------- report
    @property
    def report(self) -> Path:
        """Folder of the report stage's manifest and figure (the page is `report_html`)."""
        return self.stage_dir("report")

    @property
    def figure(self) -> Path:
        """The OursVsBaseline figure."""
        return self.report / "OursVsBaseline.png"

    # ------------------------------------------------------------------------- toy runs
    @property
    def toy(self) -> Path:
        """The demo's closing table (toy runs)."""
        return self.run_dir / "toy"

    @property
    def toy_summary_csv(self) -> Path:
        return self.toy / "summary.csv"

    @property
    def toy_attribute_prompts(self) -> Path:
        return self.toy / "attribute_prompts.csv"

    @property
    def toy_summary_md(self) -> Path:
        return self.toy / "summary.md"

    @property
    def results(self) -> Path:
        return self.run_dir / "results"

    def toy_results(self, seed: int) -> Path:
        """results/toy_seed<N>.json: the README's source (a copy is committed under docs/results/)."""
        return self.results / f"toy_seed{seed}.json"

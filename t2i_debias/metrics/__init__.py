"""Evaluation metrics: demographic bias (DESIGN.md §3) and image quality (DESIGN.md §4).

- `bias`        tvd, pairwise, kl, entropy over class proportions, each a `Metric` spec (function, direction,
                range); per-prompt values, aggregate, bootstrap CI;
- `columns`     each table column's direction and label: the one "which way is better" rule;
- `floor`       the sampling-noise floor of each bias metric (what a balanced model shows at n images);
- `paired`      paired bootstrap of (model − reference) on the same prompts and seeds, with its verdict;
- `coverage`    the simulation that chose the bias CI (docs/results/interval_coverage.md);
- `quality`     FID / KID through torchmetrics with cached reference features (the quality stage runs it);
- `summary`     predictions of generated images -> by_prompt.csv / summary.json with CIs, paired comparisons;
- `dataset`     labelled MPII people -> the analysis tables (per occupation and overall);
- `clip_score`  CLIP-T (image-prompt) and CLIP-I (image-image) with transformers CLIPModel or open_clip.
"""

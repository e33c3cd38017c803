"""Shared test fixtures: a fake run folder, augment inputs, a tiny enriched folder and training config."""

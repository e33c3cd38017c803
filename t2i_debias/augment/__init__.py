"""Counterfactual data augmentation (DESIGN.md §1.4): captions, counterfactual choice, the enriched/ dataset.

- captions.py        deterministic caption composer (articles, APA-capitalised race names)
- counterfactual.py  gender flip + least-represented race per occupation (seeded tie-breaks)
- build.py           the `enriched` stage: anchor crops, generated positives/negatives, metadata.jsonl
- reader.py          read_metadata(enriched_dir) -> list[Triplet], validating every line
"""

"""Counterfactual data augmentation (DESIGN.md §1.4): captions, counterfactual choice, the enriched/ dataset.

- captions.py        deterministic caption composer (articles, APA-capitalised race names)
- counterfactual.py  gender flip + least-represented race per occupation (seeded tie-breaks, release)
- schema.py          enriched/ file names and columns, shared by the writer and the reader
- build.py           the `enriched` stage: anchor crops, generated + verified positives/negatives, metadata.jsonl
- fidelity.py        fidelity.csv, balance.csv and _rejected.csv rows from the per-triplet outcomes
- reader.py          read_metadata(enriched_dir) -> list[Triplet], validating every line (imports schema only)
"""

"""Counterfactual data augmentation (DESIGN.md §1.4): captions, counterfactual choice, the enriched/ dataset.

- captions.py        deterministic caption composer (articles, APA-capitalised race names)
- counterfactual.py  gender flip + least-represented race per occupation (seeded tie-breaks, release)
- schema.py          enriched/ file names and columns (TripletRecord), shared by the writer and the reader
- inputs.py          the labelled people of persons.csv + labels.csv (load_people)
- planner.py         the anchor crop rule, each triplet's counterfactual, captions and seed (triplet_seed)
- verify.py          does the classifier see what was asked (agrees), what it measured, the fallback caption
- build.py           the build: anchor crops, generated + verified positives/negatives, metadata.jsonl, journal
- fidelity.py        fidelity.csv, balance.csv and _rejected.csv rows from the per-triplet outcomes
- reader.py          read_metadata(enriched_dir) -> list[Triplet], validating every line (imports schema only)
"""

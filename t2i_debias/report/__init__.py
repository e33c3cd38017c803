"""Run reports, rendered from files only: `page` (report.html, one self-contained page, built from `kit` and the
`sections_*` modules), `figure` (OursVsBaseline.png), `comparison` (the SOTA table), `readme_block` (marked blocks)."""

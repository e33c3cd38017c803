"""Run reports: `html` (report.html, one self-contained page), `figure` (OursVsBaseline.png), `sota` (comparison)."""

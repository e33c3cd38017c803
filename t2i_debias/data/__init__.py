"""MPII Human Pose data: the .mat loader (mpii), its fast reader (matreader), persons.csv's schema and
selection (persons), fixture writer (mpii_fixture) and the activity -> occupation map (occupations,
occupations.csv)."""

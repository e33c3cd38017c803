"""Tests of t2i_debias, importable as the `tests` package (pytest runs with `pythonpath = ["."]`)."""

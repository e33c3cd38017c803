"""The ground layer: run folders (atomic writes, locks, stage manifests), errors, vocabularies, small helpers.

Every other layer may import it; it imports nothing above itself, and no torch or diffusers at module level.
"""

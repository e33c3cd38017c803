"""t2i_debias: measure and reduce demographic bias in text-to-image diffusion models.

The stage scripts in the repository's folders are thin shells over this package.
"""

__version__ = "0.1.0"

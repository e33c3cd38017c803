"""The ground layer: what every other layer may import (run-folder layout, ...); no torch, no diffusers."""

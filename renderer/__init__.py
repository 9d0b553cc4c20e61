"""svdrender: batch rendering of Stable Video Diffusion clips from recipe files."""

__version__ = "0.1.0"

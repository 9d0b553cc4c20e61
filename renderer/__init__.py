"""svdrender: batch rendering of Stable Video Diffusion clips from recipe files."""

__version__ = "0.1.0"
__all__ = ["JobOutput", "__version__", "render"]


def __getattr__(name: str):
    # The Python API loads on first use, so `import renderer` (and the CLI's fast commands) stay free of torch.
    if name in ("render", "JobOutput"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'renderer' has no attribute {name!r}")

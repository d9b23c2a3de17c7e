"""kbench: LLM-written GPU kernels, verified honestly."""

__version__ = "0.1.0"
__all__ = ["__version__"]

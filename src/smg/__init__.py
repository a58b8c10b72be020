"""smg: the CPU side of LLM serving, in-process."""
__version__ = "0.1.0"

"""Interoperability: PyTorch nanochat and Hugging Face checkpoints in and out, bfloat16 weights."""
from nanochat.interop.load import detect_format, load_any, read_any

__all__ = ["detect_format", "load_any", "read_any"]

"""cllm: train GPT-style language models from raw text, with exact lattice mathematics."""

__version__ = "0.1.0"

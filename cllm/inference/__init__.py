"""Generation from a trained model: KV cache, sampling loop, incremental (streaming) decoding.

``kv_cache`` holds the per-layer keys and values, ``generate`` the batched decode loop, sampling
options, stop strings and the sliding window past block_size, ``stream`` the UTF-8-safe
incremental decoding that streaming output needs.
"""

from .generate import (Step, apply_repetition_penalty, check_sampling, compiled_decode_step, decode_steps,
                       encode_prompt, filter_logits, generate, generate_text, left_pad, sample_next, sample_text)
from .kv_cache import KVCache, LayerCache
from .stream import StreamDecoder

__all__ = ["KVCache", "LayerCache", "Step", "StreamDecoder", "apply_repetition_penalty", "check_sampling",
           "compiled_decode_step", "decode_steps", "encode_prompt", "filter_logits", "generate", "generate_text",
           "left_pad", "sample_next", "sample_text"]

"""Supervised fine-tuning for chat: the chat template (reserved turn tokens, response-only mask),
JSONL conversations -> packed batches, LoRA adapters, and the fine-tuning run (``cllm finetune``).

``template`` depends on the tokenizers and the model only, so generation (cllm.inference.chat)
can use it without importing training; ``run`` holds the training side.
"""

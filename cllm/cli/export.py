"""``cllm export``: a checkpoint as a Hugging Face transformers directory or a GGUF file."""

from __future__ import annotations


def cmd_export(args) -> int:
    from ..checkpoint import load_model
    from ..interop import export_gguf, export_hf, hf_architecture

    model, tokenizer, cfg = load_model(args.checkpoint)
    arch = hf_architecture(cfg.model)  # refuses unmapped options before anything is written
    if args.format == "hf":
        out = export_hf(model, tokenizer, args.out)
        print(f"wrote {out} ({arch}, {tokenizer.kind} tokenizer): "
              f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")
    else:
        out = export_gguf(model, tokenizer, args.out)
        print(f"wrote {out} (GGUF, {arch} mapping, float32, {tokenizer.kind} tokenizer)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint for transformers (hf) or llama.cpp (gguf)",
                       description="Write a checkpoint as a transformers directory (GPT-2, GPT-NeoX, Llama or "
                       "Qwen3, chosen by the model's options) or a GGUF file; options with no equivalent "
                       "are refused with a one-line error.")
    p.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    p.add_argument("--format", required=True, choices=["hf", "gguf"])
    p.add_argument("--out", required=True, help="output directory (hf), or .gguf file or directory (gguf)")
    p.set_defaults(func=cmd_export)

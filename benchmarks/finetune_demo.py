"""Fine-tuning demo: pre-train on the bundled corpus, fine-tune on instructions derived from it, measure.

1. ``cllm train``: a character-level base model on the bundled Shakespeare (small preset, 3 layers, block_size 96).
2. An instruction set generated from the corpus's speeches ("NAME.\\nline\\nline..."), three tasks:
     speaker   "Who says: <a line>"            -> the speaker's name (the 12 most frequent speakers)
     continue  "Continue NAME: <first line>"    -> the speech's second line
     shout     "Shout: <a short line>"          -> the line in capitals
   Speeches are split 90/10 before any example is made, so no held-out line is in the training set.
3. ``cllm finetune``: full fine-tuning, and LoRA (rank 8), from the same base.
4. On the held-out examples, before (the base model with the template's rows added, as fine-tuning
   starts) and after: exact match of the greedy reply (``cllm chat``'s session) and the mean loss on
   the assistant tokens, per task; the majority-class rate for "speaker" as a floor.

    flock /tmp/cllm-bench.lock python benchmarks/finetune_demo.py            # minutes on 2 CPU cores
    python benchmarks/finetune_demo.py --pretrain-steps 300 --finetune-steps 100 --test 20   # a quick check
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cllm.checkpoint import load_model
from cllm.corpus import __file__ as corpus_init
from cllm.finetune.conversations import IGNORE, eval_batches, read_conversations
from cllm.finetune.template import chat_tokenizer, grow_vocab
from cllm.inference.chat import ChatSession

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(corpus_init).parent / "shakespeare.txt"
SPEAKER = re.compile(r"^([A-Z][A-Z' ]+[A-Z])\.$")
TASKS = ("speaker", "continue", "shout")
BLOCK = 96  # the base model's context: every example fits


def speeches(text: str) -> list[tuple[str, list[str]]]:
    """(speaker, lines) for every "NAME." line followed by the lines of its speech."""
    out, name, lines = [], None, []
    for raw in text.splitlines() + [""]:
        line = raw.strip()
        m = SPEAKER.match(line)
        if m:
            name, lines = m.group(1), []
        elif not line:
            if name and lines:
                out.append((name, lines))
            name, lines = None, []
        elif name:
            lines.append(line)
    return out


def examples(speech_list, top_speakers: set[str], limit: int) -> dict[str, list[dict]]:
    """The three tasks' examples from these speeches, each fitting ``limit`` tokens (char tokenizer) with
    the template: <bos> <|user|> prompt <|end|> <|assistant|> response <|end|>."""
    out = {task: [] for task in TASKS}
    for name, lines in speech_list:
        first = lines[0]
        if name in top_speakers and 8 <= len(first) <= 60:
            out["speaker"].append({"prompt": f"Who says: {first}", "response": name})
        if len(lines) > 1 and len(first) <= 60 and 4 <= len(lines[1]) <= 50:
            out["continue"].append({"prompt": f"Continue {name}: {first}", "response": lines[1]})
        if 8 <= len(first) <= 40 and first.upper() != first:
            out["shout"].append({"prompt": f"Shout: {first}", "response": first.upper()})
    return {task: [r for r in records if len(r["prompt"]) + len(r["response"]) + 5 <= limit]
            for task, records in out.items()}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def cllm(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cllm", *args], check=True, cwd=ROOT)
    return time.perf_counter() - start


@torch.no_grad()
def assistant_loss(model, tokenizer, path: Path) -> float:
    data = read_conversations(path, tokenizer, model.cfg.block_size)
    total, count = 0.0, 0
    for x, y in eval_batches(data, 32, model.cfg.block_size, "cpu"):
        logits = model(x)[0]
        total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum"))
        count += int((y != IGNORE).sum())
    return total / count


def exact_match(model, tokenizer, records: list[dict]) -> float:
    hits = 0
    for r in records:
        session = ChatSession(model, tokenizer, max_new_tokens=len(r["response"]) + 8, temperature=0)
        hits += session.reply(r["prompt"]) == r["response"]
    return hits / len(records)


def measure(model, tokenizer, test: dict[str, list[dict]], files: dict[str, Path]) -> dict:
    return {task: {"exact_match": exact_match(model, tokenizer, test[task]),
                   "loss": assistant_loss(model, tokenizer, files[task])} for task in TASKS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/finetune-demo")
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--finetune-steps", type=int, default=150)
    p.add_argument("--compile", action="store_true", help="torch.compile the training runs")
    p.add_argument("--reuse-base", action="store_true", help="keep OUT/base if it is there (skip pre-training)")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--test", type=int, default=50, help="held-out examples per task")
    args = p.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    # 1. data: split by speech, then examples
    all_speeches = speeches(CORPUS.read_text(encoding="utf-8"))
    counts = collections.Counter(name for name, _ in all_speeches)
    top = {name for name, _ in counts.most_common(12)}
    random.Random(0).shuffle(all_speeches)
    cut = len(all_speeches) // 10
    limit = BLOCK + 1
    train_ex, test_ex = examples(all_speeches[cut:], top, limit), examples(all_speeches[:cut], top, limit)
    rng = random.Random(1)
    test = {task: rng.sample(test_ex[task], min(args.test, len(test_ex[task]))) for task in TASKS}
    train_records = [r for task in TASKS for r in train_ex[task]]
    rng.shuffle(train_records)
    train_file = write_jsonl(out / "train.jsonl", train_records)
    test_files = {task: write_jsonl(out / f"test-{task}.jsonl", test[task]) for task in TASKS}
    speaker_counts = collections.Counter(r["response"] for r in train_ex["speaker"])
    majority = speaker_counts.most_common(1)[0][0]
    floor = sum(r["response"] == majority for r in test["speaker"]) / len(test["speaker"])
    print(f"{len(all_speeches)} speeches; train examples {({t: len(train_ex[t]) for t in TASKS})}; "
          f"held out {({t: len(test[t]) for t in TASKS})}; speaker majority class {majority} ({floor:.0%} of held-out)")

    # 2. pre-train, 3. fine-tune
    times = {}
    compile_flag = "--compile" if args.compile else "--no-compile"  # compiling costs more than it saves here
    if not (args.reuse_base and (out / "base" / "ckpt").is_dir()):
        times["pretrain"] = cllm("train", "--preset", "small", "--n-layer", "3", "--block-size", str(BLOCK), "--max-steps",
                                 str(args.pretrain_steps), "--warmup-steps", "50", "--eval-interval",
                                 str(args.pretrain_steps), "--out", str(out / "base"), "--overwrite", "--no-progress",
                                 "--sample-tokens", "0", compile_flag)
    common = ["--checkpoint", str(out / "base"), "--data", str(train_file), "--max-steps", str(args.finetune_steps),
              "--batch-size", "12", "--eval-interval", str(max(1, args.finetune_steps // 2)), "--val-fraction", "0.02",
              "--warmup-steps", "10", "--overwrite",
              "--no-progress", compile_flag]
    times["full"] = cllm("finetune", *common, "--out", str(out / "full"))
    times["lora"] = cllm("finetune", *common, "--out", str(out / "lora"), "--lora-rank", str(args.lora_rank))

    # 4. measure
    base_model, base_tok, _ = load_model(out / "base")
    tokenizer = chat_tokenizer(base_tok)
    before = grow_vocab(base_model, tokenizer.vocab_size, seed=1337).eval()
    results = {"before": measure(before, tokenizer, test, test_files)}
    for run in ("full", "lora"):
        model, tok, _ = load_model(out / run)
        results[run] = measure(model, tok, test, test_files)
    report = {"results": results, "seconds": {k: round(v, 1) for k, v in times.items()},
              "speaker_majority_rate": floor, "held_out": {t: len(test[t]) for t in TASKS},
              "train_examples": {t: len(train_ex[t]) for t in TASKS}, "args": vars(args)}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print("\n| model | " + " | ".join(f"{t} exact | {t} loss" for t in TASKS) + " |")
    print("|---" * (1 + 2 * len(TASKS)) + "|")
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[t]['exact_match']:.0%} | {r[t]['loss']:.3f}" for t in TASKS) + " |")
    print(f"\nseconds: {report['seconds']}; speaker majority-class rate {floor:.0%}")


if __name__ == "__main__":
    main()

"""``cllm crystal analyze``: a trained embedding through exact LLL and CVP (cllm.crystal_analyze)."""

from __future__ import annotations

import json

from ..crystal_analyze import analyze, format_report


def register(subparsers) -> None:
    p = subparsers.add_parser("crystal", help="crystalline analysis of a trained model (analyze)")
    sub = p.add_subparsers(dest="crystal_command", metavar="SUBCOMMAND")
    sub.required = True
    a = sub.add_parser("analyze", help="LLL, CVP, effective rank and prime-GCD structure of the token embeddings")
    a.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    a.add_argument("--out", help="directory for report.json and ulam.png (default: <checkpoint>/crystal-analysis)")
    a.add_argument("--bits", type=int, default=10, help="integer scale: the largest entry becomes 2^bits (default 10)")
    a.add_argument("--max-tokens", type=int, default=256, help="analyse token ids 0..N-1 at most (default 256)")
    a.add_argument("--queries", type=int, default=32,
                   help="CVP queries, a seeded random sample of tokens (0: every analysed token; default 32)")
    a.add_argument("--permutations", type=int, default=200, help="relabelings for the Spearman p-value")
    a.add_argument("--seed", type=int, default=0, help="seed of the permutation test")
    a.add_argument("--no-png", action="store_true", help="skip the Ulam-spiral plot")
    a.add_argument("--json", action="store_true", help="print the report as JSON")
    a.set_defaults(func=cmd_analyze)



def cmd_analyze(args) -> int:
    report = analyze(args.checkpoint, args.out, args.bits, args.max_tokens, args.queries, args.permutations,
                     args.seed, png=not args.no_png)
    if args.json:
        slim = {k: v for k, v in report.items()}
        slim["cvp_vs_cosine"] = {k: v for k, v in report["cvp_vs_cosine"].items() if k != "details"}
        print(json.dumps(slim, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0

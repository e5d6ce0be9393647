"""``cllm chat``: talk to a fine-tuned checkpoint, a multi-turn REPL (or one answer with -p).

Reads one message per line from stdin, so it works typed at a terminal and through a pipe
(``printf 'hi\\n/quit\\n' | cllm chat --checkpoint RUN``). Replies stream to stdout, one line
each; notes (dropped turns, /clear) go to stderr so piped output is only the replies.
"""

from __future__ import annotations

import sys

from ..errors import CLLMError

HELP = "type a message; /clear forgets the conversation, /quit (or Ctrl-D) leaves"


def cmd_chat(args) -> int:
    from ..checkpoint import load_model
    from ..inference.chat import ChatSession
    from ..runtime import resolve_device

    model, tokenizer, _ = load_model(args.checkpoint, resolve_device(args.device))
    session = ChatSession(model, tokenizer, system=args.system, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    out = sys.stdout

    def answer(text: str) -> None:
        dropped = session.dropped

        def show(piece: str) -> None:
            out.write(piece)
            out.flush()

        session.reply(text, on_text=show)
        out.write("\n")
        out.flush()
        if session.dropped > dropped:
            print(f"(dropped the {session.dropped - dropped} oldest message(s) to fit the context)", file=sys.stderr)

    if args.prompt is not None:
        answer(args.prompt)
        return 0
    interactive = sys.stdin.isatty()
    if interactive:
        print(HELP, file=sys.stderr)
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            line = ""
            interactive = False
        if not line and not interactive:
            return 0  # end of input
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        command = text.strip()
        if command in ("/quit", "/exit"):
            return 0
        if command == "/clear":
            session.clear()
            print("(conversation cleared)", file=sys.stderr)
            continue
        if command.startswith("/") and " " not in command:
            print(f"(unknown command {command}; {HELP})", file=sys.stderr)
            continue
        try:
            answer(text)
        except CLLMError as e:  # a message too long for the context: say so, keep the session
            print(f"cllm: {e}", file=sys.stderr)


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a fine-tuned checkpoint (REPL; reads stdin, so pipes work)")
    p.add_argument("--checkpoint", required=True, help="a run or checkpoint directory written by cllm finetune")
    p.add_argument("-p", "--prompt", help="answer this one message and exit")
    p.add_argument("--system", default="", help="a system message placed before the conversation")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest reply in tokens")
    p.add_argument("--temperature", type=float, default=0.7, help="0: greedy")
    p.add_argument("--top-k", type=int, default=40, help="sample from the k likeliest tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample from the smallest set holding this probability")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_chat)

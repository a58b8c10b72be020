"""Command line: ``python -m smg tokenize ...`` (serving and the engine come with later stages)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smg.errors import SmgError


def _load_tokenizer(spec: str):
    from smg.tokenizer import Tokenizer
    from smg.tokenizer.bundled import BUNDLED, bundled_tokenizer_dir

    return Tokenizer.load(bundled_tokenizer_dir(spec) if spec in BUNDLED else Path(spec))


def _tokenize(args: argparse.Namespace) -> int:
    from smg.tokenizer.templates import TEMPLATES, template_path

    tokenizer = _load_tokenizer(args.tokenizer)
    text = args.text if args.text != "-" else sys.stdin.read()
    if args.chat:
        template = args.chat_template
        if template in TEMPLATES:
            template = str(template_path(template))
        messages = [{"role": "user", "content": text}]
        if args.system:
            messages.insert(0, {"role": "system", "content": args.system})
        text = tokenizer.apply_chat_template(messages, chat_template=template)
    ids = tokenizer.encode(text, add_special_tokens=args.add_special_tokens)
    out = {"num_tokens": len(ids), "ids": ids}
    if args.show_text:
        out["text"] = text
        out["tokens"] = [tokenizer.id_to_token(i) for i in ids]
    json.dump(out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m smg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tok = sub.add_parser("tokenize", help="encode text (or a one-turn chat) and print the token ids as JSON")
    tok.add_argument("--tokenizer", required=True,
                     help="tokenizer.json, a directory holding it, or a bundled name (llama3.2, deepseek)")
    tok.add_argument("--chat", action="store_true", help="render TEXT as a user turn with the chat template first")
    tok.add_argument("--chat-template", default=None,
                     help="template string, file, or bundled name (llama3, chatml_qwen3, deepseek_v3)")
    tok.add_argument("--system", default=None, help="system message for --chat")
    tok.add_argument("--add-special-tokens", action="store_true", help="let the post-processor add BOS/EOS")
    tok.add_argument("--show-text", action="store_true", help="also print the rendered text and the tokens")
    tok.add_argument("text", help="the text, or - for standard input")
    tok.set_defaults(run=_tokenize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SmgError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

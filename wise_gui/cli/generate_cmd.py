"""`wise-gui generate`: the model's greedy answer to one prompt, a quick check that it works."""

from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options every sub-command that loads a model shares."""
    parser.add_argument("--model", default="default", help="default, a Hugging Face folder, or a .gguf file")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model (off by default)")


def load_from_args(args: argparse.Namespace):
    from wise_gui.core.models import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="print the model's greedy answer to a prompt")
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wise_gui.core.models import generate

    loaded = load_from_args(args)
    print(generate(loaded, args.prompt, max_new_tokens=args.max_new_tokens, chat=args.chat).strip())
    return 0

"""`wise-gui generate`: the model's greedy answer to one question, asked as a user asks it."""

from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options every sub-command that loads a model shares."""
    parser.add_argument("--model", default="default", help="default, a Hugging Face folder, or a .gguf file")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model (off by default)")


def add_form_argument(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--raw", dest="form", action="store_const", const="raw",
                       help="ask the raw prompt as a completion instead of through the chat template")
    group.add_argument("--chat", dest="form", action="store_const", const="chat",
                       help="ask through the model's chat template (the default for models that have one)")
    parser.set_defaults(form="chat")


def load_from_args(args: argparse.Namespace):
    from wise_gui.core.models import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)


def register(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="print the model's greedy answer to a question")
    add_model_arguments(parser)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    add_form_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from wise_gui.core.errors import WiseGuiError
    from wise_gui.core.inference import BareModel

    if not args.prompt.strip():
        raise WiseGuiError("--prompt is empty.")
    model = BareModel(load_from_args(args))
    answer = model.generate([args.prompt], form=args.form, max_new_tokens=args.max_new_tokens,
                            first_sentence_only=False)[0]
    print(answer.text if answer.text else "(the model ended its answer at once, without a word)")
    return 0

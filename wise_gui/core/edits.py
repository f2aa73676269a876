"""Plain data describing an edit: what the user asks the model to learn, and how to check it."""

from __future__ import annotations

from dataclasses import dataclass

MAX_TEXT_CHARS = 2000
"""The longest prompt, target or question the workbench accepts (a question of 2,000 characters is
about 500 tokens; routing and answering it on a CPU takes seconds, not minutes)."""


@dataclass(frozen=True)
class LocalityCheck:
    """An unrelated prompt whose answer must not change (`answer` is the dataset's answer, may be empty)."""

    prompt: str
    answer: str = ""


@dataclass(frozen=True)
class EditRequest:
    """One fact to write into the model: `prompt` should be answered with `target`."""

    prompt: str
    target: str
    subject: str = ""
    paraphrases: tuple[str, ...] = ()
    locality: tuple[LocalityCheck, ...] = ()
    # Extra checks some datasets carry: ZsRE's one-hop portability question, the temporal set's
    # out-of-distribution rephrase. Each is (prompt, expected answer).
    portability: tuple[tuple[str, str], ...] = ()
    ood: tuple[tuple[str, str], ...] = ()
    source: str = ""  # where it came from, e.g. "zsre_edit_dev.json#12"

    def validate(self, max_chars: int = MAX_TEXT_CHARS) -> list[str]:
        """Reasons this edit cannot be applied; empty when it can."""
        problems = []
        if not self.prompt.strip():
            problems.append("the prompt is empty")
        if not self.target.strip():
            problems.append("the target is empty")
        for label, text in (("prompt", self.prompt), ("target", self.target)):
            if len(text) > max_chars:
                problems.append(f"the {label} is {len(text)} characters long (limit {max_chars})")
        return problems

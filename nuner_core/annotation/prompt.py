"""The annotation prompt: the paper's Figure 2 prompt by default, or a user's template file.

The rendered prompt (template with ``[INPUT SENTENCE]`` replaced by the sentence) is what
is sent as the single user message, and what the response cache is keyed on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nuner_core.hashing import short_hash
from nuner_core.paths import expand_path
from nuner_core.stage_api import StageError

PLACEHOLDER = "[INPUT SENTENCE]"
# Figure 2 of Bogdanov et al. (2024), "NuNER: Entity Recognition Encoder Pre-training via
# LLM-Annotated Data". Bump the version id whenever the file's text changes.
BUILTIN_TEMPLATE = Path(__file__).with_name("prompt_nuner_fig2.txt")
BUILTIN_VERSION = "nuner-fig2-v1"


class PromptError(StageError):
    """The prompt template cannot be used; the message names the file."""


@dataclass(frozen=True)
class PromptTemplate:
    text: str
    version: str  # recorded in every output row

    def render(self, sentence: str) -> str:
        return self.text.replace(PLACEHOLDER, sentence)

    def messages(self, sentence: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.render(sentence)}]


def _read(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text  # an editor's final newline is not part of the prompt


def load_template(path: str | None) -> PromptTemplate:
    """The built-in Figure 2 prompt (``path=None``) or a user's file (``${assets}``/$ENV expanded)."""
    if path is None:
        return PromptTemplate(_read(BUILTIN_TEMPLATE), BUILTIN_VERSION)
    file = Path(expand_path(path))
    if not file.is_file():
        raise PromptError(f"annotate.prompt_template: {file} does not exist")
    text = _read(file)
    if PLACEHOLDER not in text:
        raise PromptError(f"annotate.prompt_template: {file} has no {PLACEHOLDER} placeholder for the sentence")
    digest = short_hash(text, 12)
    return PromptTemplate(text, f"{file.stem}-{digest}")

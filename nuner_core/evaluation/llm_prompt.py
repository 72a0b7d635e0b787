"""The prompt of protocol "llm" (``llm.py``): a support set's sentences as worked examples, then the test sentence.

**Prompt** (``PROMPT_VERSION``; chat messages, so any OpenAI-compatible server works):

- system: the task, the entity types *by name* (as the data set spells them), the answer
  format, and "NONE" for a sentence without entity;
- then per support sentence, in sampling order, a worked example: a user turn
  ``Input: <the sentence's words joined by spaces>`` and an assistant turn with its gold
  answer;
- last, the user turn ``Input: <test sentence>``. Nothing of the test sentence's labels
  is in the prompt (a test checks it).

**Answer format**: one line per entity, ``<the entity's words as in the sentence> <> <type>``
(the annotation prompt's ``<>`` separator, which models follow reliably), in the order of
the sentence, an entity whose words occur twice listed twice; ``NONE`` when there is none.
"""

from __future__ import annotations

from typing import Sequence

from nuner_core.iob2.conll import Sentence, mentions

PROMPT_VERSION = "ner-icl-v1"  # bump when the prompt's text or layout changes
INPUT = "Input: "
NONE = "NONE"
SEPARATOR = " <> "
SYSTEM = """You are a named entity recognition system. The entity types are: {types}.

For the sentence after "Input:", list every entity of these types that it contains, one per line, as:
<the entity's words, exactly as written in the sentence> <> <its type>
Use only the entity types listed above, spelled as above. List the entities in the order they occur; \
if the same words are an entity twice, list them twice. \
If the sentence contains no entity of these types, answer {none}. Answer with the list only."""


def sentence_text(sentence: Sentence) -> str:
    """What the LLM reads: the words joined by single spaces."""
    return " ".join(sentence.tokens)


def gold_answer(sentence: Sentence) -> str:
    """The answer in the prompt's format: one line per mention, in the sentence's order; NONE when none."""
    lines = [" ".join(sentence.tokens[start:end]) + SEPARATOR + type_ for start, end, type_ in mentions(sentence.tags)]
    return "\n".join(lines) if lines else NONE


def example_messages(types: Sequence[str], examples: Sequence[Sentence]) -> list[dict[str, str]]:
    """The system message and the worked examples: the part of every prompt a support set shares."""
    messages = [{"role": "system", "content": SYSTEM.format(types=", ".join(types), none=NONE)}]
    for example in examples:
        messages.append({"role": "user", "content": INPUT + sentence_text(example)})
        messages.append({"role": "assistant", "content": gold_answer(example)})
    return messages


def build_messages(types: Sequence[str], examples: Sequence[Sentence], sentence: Sentence) -> list[dict[str, str]]:
    """The full prompt for one test sentence: its words only, never its tags."""
    return example_messages(types, examples) + [{"role": "user", "content": INPUT + sentence_text(sentence)}]

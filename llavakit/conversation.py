"""Conversations rendered with a template (the registry is `llavakit.conversation_templates`)
into the prompt strings LLaVA-family checkpoints were trained with, and the token ids + labels
that train only the assistant's replies.

Labels are built by construction. Rendering records the character span of every trained piece
(an answer plus its end-of-turn separator) while it assembles the prompt; the whole prompt is
then tokenised once with offsets, and a token is trained when it starts inside a span. The
reference implementation instead split the rendered string, re-tokenised the pieces and, when
the counts disagreed, silently masked the whole sample ("tokenization mismatch"); nothing here
depends on how a tokenizer treats string pieces in isolation.

A trained span starts right where the generation prompt ends (`ASSISTANT:` → ` The bus…</s>`),
so the leading space that most tokenizers glue onto the first answer word is trained: it is
exactly what the model has to produce after the generation prompt. A token that starts inside a
span and runs past its end (byte-level BPE merging `</s><s>` into `</`, `s`, `><`) is trained
whole, since it is the token the model must emit to close its answer. A token that runs from
the prompt into an answer is refused with an error: that answer's first token cannot be
trained, and generation would start from a tokenisation the model never saw.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from llavakit.conversation_templates import Template, get_template
from llavakit.conversation_templates import template_names as template_names

IMAGE_TOKEN = "<image>"
"""Placeholder for one image; the processor later expands it into the image's feature slots."""

IGNORE_INDEX = -100
"""Label of tokens that are not trained (the value PyTorch's cross-entropy ignores)."""

_ANSI_GREEN = "\033[32m"
_ANSI_RESET = "\033[0m"


class ConversationError(ValueError):
    """A conversation that cannot be rendered with the chosen template (the message says why)."""


@dataclass(frozen=True)
class Encoded:
    """One tokenised conversation."""

    input_ids: list[int]
    """Token ids of the full rendering, the tokenizer's own special tokens (e.g. BOS) included."""
    labels: list[int]
    """Same length as input_ids: the token id where trained, IGNORE_INDEX elsewhere."""


_LLAVA_ROLES = MappingProxyType(
    {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
    }
)


def messages_from_llava(conversations: list[dict]) -> list[dict]:
    """Turn a LLaVA record's `conversations` into chat messages.

    `[{"from": "human"|"gpt", "value": ...}]` → `[{"role": "user"|"assistant", "content": ...}]`;
    "user"/"assistant" and a leading "system" are accepted too. Turn order is checked here so a
    bad record is reported with the index of the offending turn.
    """
    if not isinstance(conversations, list):
        raise ConversationError(
            f"'conversations' must be a list of turns, got {type(conversations).__name__}"
        )
    messages = []
    for index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ConversationError(
                f"turn {index}: expected an object with 'from' and 'value', got {turn!r:.80}"
            )
        speaker = turn["from"]
        role = _LLAVA_ROLES.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            raise ConversationError(
                f"turn {index}: unknown 'from' value {speaker!r}; expected 'human' or 'gpt'"
            )
        messages.append({"role": role, "content": turn["value"]})
    check_messages(messages)
    return messages


def check_messages(messages: Sequence[dict], add_generation_prompt: bool | None = None) -> None:
    """Raise ConversationError unless the messages form a well-ordered chat.

    An optional system message comes first, then user and assistant alternate starting with
    the user, every content is a string. With `add_generation_prompt` given, the last message
    must be a user turn (True: the model answers next) or an assistant turn (False: training).
    """
    if not messages:
        raise ConversationError("the conversation has no turns")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ConversationError(
                f"turn {index}: expected a {{'role', 'content'}} object, got {message!r:.80}"
            )
    offset = 1 if messages[0].get("role") == "system" else 0
    for index, message in enumerate(messages):
        role = message.get("role")
        if index < offset:
            expected = "system"
        else:
            expected = "user" if (index - offset) % 2 == 0 else "assistant"
        if role != expected:
            raise ConversationError(
                f"turn {index}: expected a {expected!r} turn, got {role!r}; turns must "
                "alternate user (human) / assistant (gpt), starting with the user, after an "
                "optional first system turn"
            )
        content = message.get("content")
        if not isinstance(content, str):
            raise ConversationError(
                f"turn {index}: the text must be a string, got {type(content).__name__}"
            )
    if len(messages) == offset:
        raise ConversationError("the conversation has a system message but no user turn")
    last = messages[-1]["role"]
    if add_generation_prompt is True and last != "user":
        raise ConversationError(
            f"turn {len(messages) - 1}: a generation prompt needs the conversation to end with "
            f"a user turn, it ends with {last!r}"
        )
    if add_generation_prompt is False and last != "assistant":
        raise ConversationError(
            f"turn {len(messages) - 1}: a training conversation must end with an assistant "
            f"answer, it ends with {last!r}"
        )


def move_image_to_front(text: str) -> str:
    """Put a single `<image>` at the front followed by a newline, as LLaVA was trained.

    "What is this?\\n<image>" → "<image>\\nWhat is this?". Text with several placeholders is
    left alone: their positions interleave images with words on purpose.
    """
    if text.count(IMAGE_TOKEN) != 1:
        return text
    rest = text.replace(IMAGE_TOKEN, "").strip()
    return f"{IMAGE_TOKEN}\n{rest}" if rest else IMAGE_TOKEN


def render_text(
    template: Template | str,
    messages: Sequence[dict],
    add_generation_prompt: bool = False,
    tokenizer: Any = None,
) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation into the prompt string and the character spans to train.

    Returns `(text, spans)`: spans are `(start, end)` into text, one per assistant answer,
    covering the answer and its end-of-turn separator. With `add_generation_prompt` the last
    message must be the user's and text ends with the assistant prefix. `tokenizer` is needed
    only by the "tokenizer" template.
    """
    template = get_template(template) if isinstance(template, str) else template
    check_messages(messages, add_generation_prompt)
    messages = _with_image_in_front(template, messages)
    if template.uses_chat_template:
        return _render_with_chat_template(tokenizer, messages, add_generation_prompt)
    return _render_builtin(template, messages)


def encode(
    tokenizer: Any,
    template: Template | str,
    messages: Sequence[dict],
    add_generation_prompt: bool = False,
) -> Encoded:
    """Tokenise a conversation into input ids and labels (IGNORE_INDEX outside trained spans).

    The prompt is tokenised once, with the tokenizer's own special-token behaviour (BOS for
    Llama, nothing for GPT-2 or Qwen2); a BOS the rendered text already starts with (chat
    templates like Llama-3's write it) is not added twice. Needs a fast tokenizer, whose
    offsets map every token back to the characters it came from. Raises ConversationError for
    a conversation the template cannot render, or when a token runs from the prompt into an
    answer (see the module docstring).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"encoding needs a fast (Rust `tokenizers`) tokenizer for character offsets, "
            f"got {type(tokenizer).__name__}"
        )
    template = get_template(template) if isinstance(template, str) else template
    text, spans = render_text(template, messages, add_generation_prompt, tokenizer)
    bos = tokenizer.bos_token
    encoding = tokenizer(
        text,
        add_special_tokens=not (bos and text.startswith(bos)),
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    input_ids = list(encoding["input_ids"])
    span_starts = [start for start, _ in spans]
    labels = []
    for token_id, (start, end), added in zip(
        input_ids, encoding["offset_mapping"], encoding["special_tokens_mask"]
    ):
        # `added`: inserted by the tokenizer's post-processor (BOS/EOS), so it has no source text.
        span = bisect_right(span_starts, start) - 1
        if not added and span + 1 < len(spans) and span_starts[span + 1] < end:
            raise ConversationError(
                f"token {text[start:end]!r} (characters {start}-{end}) runs from the prompt into "
                f"the answer starting at character {span_starts[span + 1]}: this tokenizer "
                f"merges across the assistant prefix of template {template.name!r}, so the "
                "answer cannot be trained from its first token"
            )
        trained = not added and span >= 0 and start < spans[span][1]
        labels.append(token_id if trained else IGNORE_INDEX)
    return Encoded(input_ids=input_ids, labels=labels)


def format_trained(
    tokenizer: Any, input_ids: Sequence[int], labels: Sequence[int], color: bool = True
) -> str:
    """Debug view of a sample: the decoded text with the trained tokens highlighted.

    Trained runs are green with `color`, else wrapped in `[[ ]]`. Runs are cut from decodes of
    whole prefixes so that spaces a tokenizer only restores in context come out right.
    """
    if len(input_ids) != len(labels):
        raise ValueError(f"{len(input_ids)} input ids but {len(labels)} labels")
    ids = list(input_ids)
    pieces = []
    run_start = 0
    for index in range(1, len(ids) + 1):
        at_end = index == len(ids)
        trained = labels[run_start] != IGNORE_INDEX
        if not at_end and (labels[index] != IGNORE_INDEX) == trained:
            continue
        text = _decode_run(tokenizer, ids, run_start, index)
        if trained:
            text = f"{_ANSI_GREEN}{text}{_ANSI_RESET}" if color else f"[[{text}]]"
        pieces.append(text)
        run_start = index
    return "".join(pieces)


def _decode_run(tokenizer: Any, ids: list[int], start: int, end: int) -> str:
    """Text of ids[start:end] as it reads inside the whole sequence."""

    def decode(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    before, through = decode(ids[:start]), decode(ids[:end])
    if through.startswith(before):
        return through[len(before) :]
    return decode(ids[start:end])  # a multi-byte character split across the run boundary


def _with_image_in_front(template: Template, messages: Sequence[dict]) -> list[dict]:
    """Copies of the messages with the first user turn's image placeholder moved to the front,
    and every user image placeholder wrapped as the template writes it (mmtag: `<Image>…</Image>`).
    """
    copies = [dict(message) for message in messages]
    first_user = next(message for message in copies if message["role"] == "user")
    first_user["content"] = move_image_to_front(first_user["content"])
    if template.image_prefix or template.image_suffix:
        markup = template.image_prefix + IMAGE_TOKEN + template.image_suffix
        for message in copies:
            if message["role"] == "user":
                message["content"] = message["content"].replace(IMAGE_TOKEN, markup)
    return copies


def _render_builtin(template: Template, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Assemble the prompt from the template's pieces, noting where each answer piece lands."""
    system = template.system
    if messages[0]["role"] == "system":
        system = messages[0]["content"]
        messages = messages[1:]
        if not (template.system_format or template.first_user_system_format):
            raise ConversationError(f"template {template.name!r} has no place for a system message")
    exchanges = [
        (messages[i]["content"], messages[i + 1]["content"] if i + 1 < len(messages) else None)
        for i in range(0, len(messages), 2)
    ]
    if template.drops_instruction:
        exchanges = _plain_exchanges(template, exchanges)

    text = template.system_format.replace("{system}", system)
    spans = []
    for index, (user, answer) in enumerate(exchanges):
        if index == 0 and system and template.first_user_system_format:
            user = template.first_user_system_format.replace("{system}", system) + user
        if index > 0:
            text += template.exchange_separator
        text += template.prompt_format.replace("{user}", user)
        if answer is not None:
            start = len(text)
            text += template.answer_format.replace("{answer}", answer)
            spans.append((start, len(text)))
    return text, spans


def _plain_exchanges(
    template: Template, exchanges: list[tuple[str, str | None]]
) -> list[tuple[str, str | None]]:
    """Stage-1 pairs keep only the image placeholders of the instruction."""
    if len(exchanges) != 1:
        raise ConversationError(
            f"template {template.name!r} takes one user turn and one answer (an image and its "
            f"caption), got {len(exchanges)} user turns"
        )
    user, answer = exchanges[0]
    images = user.count(IMAGE_TOKEN)
    if images == 0:
        raise ConversationError(
            f"turn 0: template {template.name!r} needs an {IMAGE_TOKEN} in the user turn"
        )
    return [(IMAGE_TOKEN * images, answer)]


def _render_with_chat_template(
    tokenizer: Any, messages: list[dict], add_generation_prompt: bool
) -> tuple[str, list[tuple[int, int]]]:
    """Render with the tokenizer's Jinja template; find answers through the prefix property.

    The answer to turn i is what rendering messages[:i+1] adds to rendering messages[:i] with a
    generation prompt. That is only meaningful when each rendering extends the previous one,
    which is checked rather than assumed.
    """
    if tokenizer is None:
        raise ValueError("the 'tokenizer' conversation template needs the tokenizer to render")
    if not getattr(tokenizer, "chat_template", None):
        raise ConversationError(
            f"the tokenizer ({getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__})"
            " has no chat_template; choose a built-in conversation template instead"
        )

    def render(part: list[dict], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            part, tokenize=False, add_generation_prompt=generation_prompt
        )

    text = render(messages, add_generation_prompt)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:index], True)
        answered = render(messages[: index + 1], False)
        if not (answered.startswith(prompt) and text.startswith(answered)):
            raise ConversationError(
                f"turn {index}: the tokenizer's chat template lacks the prefix property (the "
                "rendering up to a generation prompt must be extended, not rewritten, by the "
                "answer and later turns), so trained spans cannot be found; choose a built-in "
                "conversation template instead"
            )
        spans.append((len(prompt), len(answered)))
    return text, spans

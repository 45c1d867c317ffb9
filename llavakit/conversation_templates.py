"""The conversation template registry: every name the official LLaVA `conv_templates` accepts.

The strings below are interoperability strings (LLAVA_FACTS §3): a checkpoint only answers well
when it sees the exact prompt it was trained on, so each template reproduces the official
rendering character for character. `llavakit.conversation` renders them into token ids and
labels; `llavakit.model.convert_template` turns them into Jinja for exported folders.

Where the official code contradicts itself, the form a model was *trained* on is kept:
- `plain`: the official `get_prompt` writes `<image>\\n{instruction}\\n` as the generation prompt,
  but stage-1 training text is `<image>{caption}\\n` (instruction dropped, no newline after the
  image). The generation prompt here is `<image>`, the training text's prefix.
- `v0_mmtag` / `v1_mmtag`: training wraps the image in place (`<Image><image></Image>\\n{text}`),
  while the official Gradio demo's `get_prompt` instead inserts an extra exchange
  (`<Image><image></Image>` answered by `Received.`). Rendering follows training.
- `llava_v0` and `v0`: the official v0 training path (`_add_speaker_and_signal`) writes
  `### Human: ...\\n` lines that no official inference path uses; rendering follows the
  `conversation.py` form `###Human: ...###Assistant: ...###` shared by inference and by every
  later training script.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Template:
    """How one model family lays out a chat.

    A conversation renders as `system_format`, then per exchange the untrained prompt part
    (`prompt_format`, which ends with the assistant prefix) and the trained answer part
    (`answer_format`, which ends with the end-of-turn separator), exchanges joined by
    `exchange_separator`. Placeholders `{system}`, `{user}`, `{answer}` are replaced literally
    (never through `str.format`, so braces in user text are safe).
    """

    name: str
    """Canonical registry name (saved in checkpoints so a model reloads with its template)."""
    system: str
    """Default system message, used when the conversation brings none."""
    stop_str: str | None
    """Text whose appearance ends generation; None: stop at the tokenizer's EOS token."""
    system_format: str = ""
    """Rendered once at the very start; `{system}` is the system message."""
    first_user_system_format: str = ""
    """Llama-2 style: prepended to the first user message instead of a separate system block."""
    prompt_format: str = ""
    """User turn plus assistant prefix (untrained); the generation prompt ends with it."""
    answer_format: str = ""
    """Assistant reply plus end-of-turn separator (trained)."""
    exchange_separator: str = ""
    """Untrained text between one exchange's answer and the next exchange's prompt."""
    image_prefix: str = ""
    """Written before every image placeholder of the user turns (`<Image>` for the mmtag modes)."""
    image_suffix: str = ""
    """Written after every image placeholder of the user turns (`</Image>` for the mmtag modes)."""
    drops_instruction: bool = False
    """LLaVA stage-1 `plain`: the user's words are dropped, only its image placeholders stay."""
    uses_chat_template: bool = False
    """Render with the tokenizer's own Jinja `chat_template` instead of the fields above."""


_SYSTEM_USER = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
_SYSTEM_HUMAN = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions."
)
_SYSTEM_LLAVA_LLAMA_2 = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using "
    "natural language."
)
# Text-only Llama-2 chat's system prompt (two spaces after "safe." as in the official string).
_SYSTEM_LLAMA_2 = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as "
    "possible, while being safe.  Your answers should not include any harmful, unethical, "
    "racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses "
    "are socially unbiased and positive in nature.\n\nIf a question does not make any sense, "
    "or is not factually coherent, explain why instead of answering something not correct. "
    "If you don't know the answer to a question, please don't share false information."
)
# The mmtag modes' system text (no space after "language." in the official string).
_SYSTEM_MMTAG = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "is able to understand the visual content that the user provides, and assist the user "
    "with a variety of tasks using natural language.The visual content will be provided with "
    "the following format: <Image>visual content</Image>."
)
_SYSTEM_MPT = (
    "A conversation between a user and an LLM-based AI assistant. The assistant gives helpful "
    "and honest answers."
)
# Vicuna v0's built-in example exchange, which precedes every conversation in `default`/`v0`.
_V0_EXAMPLE_QUESTION = (
    "What are the key differences between renewable and non-renewable energy sources?"
)
_V0_EXAMPLE_ANSWER = (
    "Renewable energy sources are those that can be replenished naturally in a relatively "
    "short amount of time, such as solar, wind, hydro, geothermal, and biomass. Non-renewable "
    "energy sources, on the other hand, are finite and will eventually be depleted, such as "
    "coal, oil, and natural gas. Here are some key differences between renewable and "
    "non-renewable energy sources:\n"
    "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable "
    "energy sources are finite and will eventually run out.\n"
    "2. Environmental impact: Renewable energy sources have a much lower environmental impact "
    "than non-renewable sources, which can lead to air and water pollution, greenhouse gas "
    "emissions, and other negative effects.\n"
    "3. Cost: Renewable energy sources can be more expensive to initially set up, but they "
    "typically have lower operational costs than non-renewable sources.\n"
    "4. Reliability: Renewable energy sources are often more reliable and can be used in more "
    "remote locations than non-renewable sources.\n"
    "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to "
    "different situations and needs, while non-renewable sources are more rigid and "
    "inflexible.\n"
    "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
    "non-renewable sources are not, and their depletion can lead to economic and social "
    "instability.\n"
)
_LLAMA_2_SYSTEM_WRAP = "<<SYS>>\n{system}\n<</SYS>>\n\n"


def _vicuna(name: str, system: str, **fields) -> Template:
    """`USER: ... ASSISTANT: ...</s>` (the official SeparatorStyle.TWO with sep " ", sep2 "</s>")."""
    return Template(
        name=name,
        system=system,
        stop_str="</s>",
        system_format="{system} ",
        prompt_format="USER: {user} ASSISTANT:",
        answer_format=" {answer}</s>",
        **fields,
    )


def _sharp(name: str, system: str, system_format: str = "{system}###", **fields) -> Template:
    """`###Human: ...###Assistant: ...###` (the official SeparatorStyle.SINGLE with sep "###")."""
    return Template(
        name=name,
        system=system,
        stop_str="###",
        system_format=system_format,
        prompt_format="Human: {user}###Assistant:",
        answer_format=" {answer}###",
        **fields,
    )


def _llama_2(name: str, system: str, exchange_separator: str) -> Template:
    """`[INST] ... [/INST] ... </s>` (the official SeparatorStyle.LLAMA_2)."""
    return Template(
        name=name,
        system=system,
        stop_str="</s>",
        first_user_system_format=_LLAMA_2_SYSTEM_WRAP,
        prompt_format="[INST] {user} [/INST]",
        answer_format=" {answer} </s>",
        exchange_separator=exchange_separator,
    )


def _chatml(name: str, system: str) -> Template:
    """ChatML turns joined without newlines (the official SeparatorStyle.MPT)."""
    return Template(
        name=name,
        system=system,
        stop_str="<|im_end|>",
        system_format="<|im_start|>system\n{system}<|im_end|>",
        prompt_format="<|im_start|>user\n{user}<|im_end|><|im_start|>assistant\n",
        answer_format="{answer}<|im_end|>",
    )


_MMTAG = {"image_prefix": "<Image>", "image_suffix": "</Image>"}
_TEMPLATES = (
    _vicuna("vicuna_v1", _SYSTEM_USER),
    _vicuna("llava_v1", _SYSTEM_HUMAN),
    _vicuna("v1_mmtag", _SYSTEM_MMTAG, **_MMTAG),
    _sharp("llava_v0", _SYSTEM_HUMAN),
    _sharp("v0_mmtag", _SYSTEM_MMTAG, **_MMTAG),
    _sharp(
        "v0",
        _SYSTEM_HUMAN,
        system_format=(
            f"{{system}}###Human: {_V0_EXAMPLE_QUESTION}###Assistant: {_V0_EXAMPLE_ANSWER}###"
        ),
    ),
    _llama_2("llava_llama_2", _SYSTEM_LLAVA_LLAMA_2, exchange_separator="<s>"),
    _llama_2("llama_2", _SYSTEM_LLAMA_2, exchange_separator="<s>"),
    _llama_2("mistral_instruct", "", exchange_separator=""),
    _chatml("chatml_direct", "Answer the questions."),
    _chatml("mpt", _SYSTEM_MPT),
    Template(
        name="plain",
        system="",
        stop_str="\n",
        prompt_format="{user}",
        answer_format="{answer}\n",
        drops_instruction=True,
    ),
    Template(name="tokenizer", system="", stop_str=None, uses_chat_template=True),
)
_REGISTRY = MappingProxyType({template.name: template for template in _TEMPLATES})
_ALIASES = MappingProxyType(
    {
        "v1": "vicuna_v1",
        "default": "v0",
        "mistral_direct": "chatml_direct",
        "v0_plain": "plain",
    }
)
"""Other names of the official registry for the same conversation format."""


def template_names() -> list[str]:
    """Every name get_template accepts: canonical names in registry order, then aliases."""
    return [*_REGISTRY, *_ALIASES]


def get_template(name: str) -> Template:
    """Look a template up by name or alias."""
    canonical = _ALIASES.get(name, name)
    if canonical not in _REGISTRY:
        raise ValueError(
            f"unknown conversation template {name!r}; known: {', '.join(template_names())}"
        )
    return _REGISTRY[canonical]

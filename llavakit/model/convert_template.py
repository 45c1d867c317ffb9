"""llavakit conversation templates as Jinja chat templates, for exported Hugging Face folders.

transformers, vLLM and SGLang build prompts with the tokenizer's/processor's `chat_template`. The
Jinja written here renders exactly what `llavakit.conversation.render_text` renders for the same
messages, so a served export sees the prompts its weights were trained on:
- an optional first system message replaces the template's default system text;
- the first user turn's single `<image>` moves to the front followed by a newline (and is
  wrapped as `<Image><image></Image>` by the mmtag templates);
- content may be a string or a list of parts ({"type": "text"} and {"type": "image"} /
  {"type": "image_url"}); each image part becomes `<image>` + newline, in order.
The assistant prefix (`ASSISTANT:`, `[/INST]`, ...) belongs to each user turn in these templates,
so a conversation ending with a user turn always ends with it, with or without
`add_generation_prompt`.
"""

from __future__ import annotations

import json

from llavakit.conversation import IMAGE_TOKEN, Template


def _literal(text: str) -> str:
    """A Jinja string literal (JSON escaping is valid Jinja: its lexer decodes unicode escapes)."""
    return json.dumps(text)


def _fill(pattern: str, placeholder: str, expression: str) -> str:
    """Jinja expression for `pattern` with `placeholder` replaced by the value of `expression`."""
    pieces = pattern.split(placeholder)
    parts = []
    for index, piece in enumerate(pieces):
        if index:
            parts.append(f"({expression})")
        if piece:
            parts.append(_literal(piece))
    return " ~ ".join(parts) if parts else '""'


def _content_macro() -> str:
    """`content_text(content)`: a message's text, image parts written as `<image>` + newline."""
    image = _literal(IMAGE_TOKEN + "\n")
    return "\n".join(
        [
            "{%- macro content_text(content) -%}",
            "{%- if content is string -%}{{ content }}",
            "{%- elif content is not none -%}{%- for part in content -%}",
            "{%- if part['type'] in ['image', 'image_url'] -%}{{ " + image + " }}",
            "{%- elif part['type'] == 'text' -%}{{ part['text'] }}",
            "{%- endif -%}{%- endfor -%}{%- endif -%}",
            "{%- endmacro -%}",
        ]
    )


def chat_template_for(template: Template) -> str:
    """The Jinja chat template equivalent to a built-in llavakit template.

    Raises ValueError for the `tokenizer` template, which has no fields to translate (the
    tokenizer's own chat template is already Jinja).
    """
    if template.uses_chat_template:
        raise ValueError(f"template {template.name!r} renders with the tokenizer's own Jinja")
    image, image_nl = _literal(IMAGE_TOKEN), _literal(IMAGE_TOKEN + "\n")
    error = (
        "{{ raise_exception('turns must alternate user/assistant, starting with the user, "
        "after an optional first system message') }}"
    )
    lines = [
        _content_macro(),
        "{%- set ns = namespace(system=" + _literal(template.system) + ", exchange=0) -%}",
        "{%- set offset = 0 -%}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "{%- set ns.system = content_text(messages[0]['content']) -%}",
        "{%- set offset = 1 -%}",
        "{%- endif -%}",
    ]
    if template.system_format:
        lines.append("{{ " + _fill(template.system_format, "{system}", "ns.system") + " }}")
    lines += [
        "{%- for message in messages[offset:] -%}",
        "{%- set expected = 'user' if loop.index0 % 2 == 0 else 'assistant' -%}",
        "{%- if message['role'] != expected -%}" + error + "{%- endif -%}",
        "{%- if message['role'] == 'user' -%}",
        "{%- set text = content_text(message['content']) -%}",
        "{%- if ns.exchange == 0 and text.count(" + image + ") == 1 -%}",
        "{%- set rest = text.replace(" + image + ", '').strip() -%}",
        "{%- set text = (" + image_nl + " ~ rest) if rest else " + image + " -%}",
        "{%- endif -%}",
    ]
    if template.image_prefix or template.image_suffix:
        # The mmtag modes wrap every image of the user turns: `<Image><image></Image>`.
        markup = _literal(template.image_prefix + IMAGE_TOKEN + template.image_suffix)
        lines.append("{%- set text = text.replace(" + image + ", " + markup + ") -%}")
    if template.drops_instruction:
        # Stage-1 `plain`: only the image placeholders of the instruction remain.
        lines.append("{%- set text = " + image + " * text.count(" + image + ") -%}")
    if template.first_user_system_format:
        wrapped = _fill(template.first_user_system_format, "{system}", "ns.system")
        lines.append(
            "{%- if ns.exchange == 0 and ns.system -%}{%- set text = "
            + wrapped
            + " ~ text -%}{%- endif -%}"
        )
    if template.exchange_separator:
        lines.append(
            "{%- if ns.exchange > 0 -%}{{ "
            + _literal(template.exchange_separator)
            + " }}{%- endif -%}"
        )
    answer = _fill(template.answer_format, "{answer}", "content_text(message['content'])")
    lines += [
        "{{ " + _fill(template.prompt_format, "{user}", "text") + " }}",
        "{%- set ns.exchange = ns.exchange + 1 -%}",
        "{%- else -%}",
        "{{ " + answer + " }}",
        "{%- endif -%}",
        "{%- endfor -%}",
    ]
    # Every line is a tag with whitespace control, so the newlines never reach the output.
    return "\n".join(lines) + "\n"

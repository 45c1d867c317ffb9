"""`llavakit web`: a Gradio chat page: upload an image, ask questions, watch answers stream.

The page talks to a `ChatBackend`: either the generation engine in this process (the same
`ChatSession` the terminal chat uses) or any OpenAI-compatible server such as `llavakit serve`,
through the official `openai` client. The conversation lives in the page's session state as plain
`{"role", "content"}` messages; changing the image starts a new conversation, because the image
belongs to the first user turn.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image

from llavakit.infer.chat import ChatSession
from llavakit.infer.engine import Engine, SamplingParams

MAX_TOKENS_LIMIT = 2048


@dataclass
class WebOptions:
    """What `llavakit web` was asked to do."""

    checkpoint: Path | None = None
    """Run this checkpoint in-process (exclusive with server_url)."""
    server_url: str | None = None
    """OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1."""
    api_key: str | None = None
    model: str | None = None
    """Model id at server_url; default: the first one it lists."""
    host: str = "127.0.0.1"
    port: int = 7860
    device: str = "auto"
    dtype: str = "auto"
    load_in_bits: int | None = None
    device_map: str | None = None


class ChatBackend(Protocol):
    description: str

    def stream(
        self,
        history: list[dict],
        text: str,
        image: Image.Image | None,
        params: SamplingParams,
    ) -> Iterator[str]:
        """Pieces of the answer to `text` after `history` (the image goes with turn one)."""
        ...


class EngineBackend:
    """The model in this process."""

    def __init__(self, engine: Engine, description: str = "in-process model"):
        self.engine = engine
        self.description = description

    def stream(self, history, text, image, params) -> Iterator[str]:
        session = ChatSession(self.engine, params, image, list(history))
        yield from session.stream(text)


class ServerBackend:
    """An OpenAI-compatible server, reached with the official client."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key or "none")
        if model is None:
            models = self.client.models.list().data
            if not models:
                raise ValueError(f"the server at {base_url} lists no models")
            model = models[0].id
        self.model = model
        self.description = f"{model} at {base_url}"

    def stream(self, history, text, image, params) -> Iterator[str]:
        response = self.client.chat.completions.create(
            model=self.model,
            messages=openai_messages(history, text, image),
            stream=True,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
        )
        for chunk in response:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content


def openai_messages(history: list[dict], text: str, image: Image.Image | None) -> list[dict]:
    """The conversation in OpenAI's format, the image as a PNG data URL in the first user turn."""
    messages = [{"role": m["role"], "content": m["content"]} for m in history]
    messages.append({"role": "user", "content": text})
    if image is not None:
        first = next(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[first]["content"] = [
            {"type": "image_url", "image_url": {"url": png_data_url(image)}},
            {"type": "text", "text": messages[first]["content"]},
        ]
    return messages


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def build_app(backend: ChatBackend):
    """The Gradio Blocks page (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local UI
    import gradio as gr

    def respond(text, conversation, image, temperature, top_p, max_tokens):
        text = (text or "").strip()
        if not text:
            yield gr.skip(), gr.skip(), gr.skip()
            return
        params = SamplingParams(
            max_new_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p)
        )
        shown = [*conversation, {"role": "user", "content": text}]
        answer = ""
        yield "", [*shown, {"role": "assistant", "content": "…"}], conversation
        try:
            for piece in backend.stream(conversation, text, image, params):
                answer += piece
                yield "", [*shown, {"role": "assistant", "content": answer}], conversation
        except Exception as error:  # shown in the page instead of a silent failure
            raise gr.Error(f"{type(error).__name__}: {error}") from None
        done = [*shown, {"role": "assistant", "content": answer}]
        yield "", done, done

    def new_conversation():
        return [], []

    with gr.Blocks(title="llavakit chat", analytics_enabled=False) as app:
        gr.Markdown(f"## llavakit chat\nTalking to {backend.description}.")
        conversation = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    type="pil",
                    label="Image",
                    sources=["upload", "clipboard"],
                    height=280,
                    elem_id="image",
                )
                temperature = gr.Slider(
                    0,
                    2,
                    value=0.2,
                    step=0.05,
                    label="Temperature (0 = greedy)",
                    elem_id="temperature",
                )
                top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top-p", elem_id="top-p")
                max_tokens = gr.Slider(
                    1,
                    MAX_TOKENS_LIMIT,
                    value=256,
                    step=1,
                    label="Max new tokens",
                    elem_id="max-tokens",
                )
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Conversation", elem_id="chatbot", height=420)
                question = gr.Textbox(
                    placeholder="Ask about the image, then press Enter",
                    show_label=False,
                    elem_id="question",
                )
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear = gr.Button("Clear", elem_id="clear")
        inputs = [question, conversation, image, temperature, top_p, max_tokens]
        outputs = [question, chatbot, conversation]
        question.submit(respond, inputs, outputs)
        send.click(respond, inputs, outputs)
        image.change(new_conversation, None, [chatbot, conversation])
        clear.click(lambda: (None, [], [], ""), None, [image, chatbot, conversation, question])
    return app


def run_web(options: WebOptions) -> None:
    """Build the backend, then serve the page until interrupted."""
    if options.server_url:
        backend: ChatBackend = ServerBackend(options.server_url, options.api_key, options.model)
    else:
        engine = Engine.load(
            options.checkpoint,
            device=options.device,
            dtype=options.dtype,
            load_in_bits=options.load_in_bits,
            device_map=options.device_map,
        )
        backend = EngineBackend(engine, f"{Path(options.checkpoint).name} (in-process)")
    build_app(backend).launch(
        server_name=options.host, server_port=options.port, ssr_mode=False, show_error=True
    )

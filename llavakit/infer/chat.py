"""`llavakit chat`: ask a checkpoint about an image, once or in a multi-turn terminal session.

Only answers go to stdout (so `llavakit chat ... --query Q > answer.txt` keeps just the answer);
loading messages and errors go to stderr. The session keeps the conversation so follow-up
questions see earlier turns; the image belongs to the first user turn, as in LLaVA's training
data, so changing it starts a new conversation.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from PIL import Image

from llavakit.infer.engine import Engine, Request, SamplingParams, with_image_tags
from llavakit.infer.images import ImagePolicy, resolve_image

HELP = "commands: /image PATH (new image, new conversation), /reset, /exit"


@dataclass
class ChatOptions:
    """What `llavakit chat` was asked to do."""

    checkpoint: Path
    image: Path | None = None
    """Image to talk about; none means a text-only conversation."""
    query: str | None = None
    """One question to answer and exit; none starts the interactive session."""
    params: SamplingParams = field(default_factory=SamplingParams)
    device: str = "auto"
    dtype: str = "auto"
    load_in_bits: int | None = None
    device_map: str | None = None


@dataclass
class ChatSession:
    """One conversation about one (optional) image."""

    engine: Engine
    params: SamplingParams
    image: Image.Image | None = None
    messages: list[dict] = field(default_factory=list)

    def ask(self, text: str) -> str:
        """Answer `text` given the conversation so far."""
        request = self._request(text)
        answer = self.engine.complete(request).text
        self.messages = [*request.messages, {"role": "assistant", "content": answer}]
        return answer

    def stream(self, text: str) -> Iterator[str]:
        """Like `ask`, yielding the answer in pieces as they are produced."""
        request = self._request(text)
        pieces = []
        for piece in self.engine.stream(request):
            pieces.append(piece)
            yield piece
        self.messages = [*request.messages, {"role": "assistant", "content": "".join(pieces)}]

    def _request(self, text: str) -> Request:
        """The next request, refused if the conversation no longer fits the model's context."""
        messages = [*self.messages, {"role": "user", "content": text}]
        images = [self.image] if self.image else []
        processor = self.engine.processor
        sample = processor.encode(
            with_image_tags(messages, len(images)), images, add_generation_prompt=True
        )
        if sample.truncated:
            raise ValueError(
                f"the conversation no longer fits the model's context of "
                f"{processor.model_config.max_length} tokens; start a new one"
            )
        return Request(messages, images, self.params)

    def reset(self) -> None:
        self.messages = []

    def change_image(self, image: Image.Image) -> None:
        self.image = image
        self.reset()


def load_local_image(path: str | Path) -> Image.Image:
    """An image file the user named on their own machine (local files allowed)."""
    return resolve_image(Path(path).expanduser(), ImagePolicy(allow_local_files=True))


def run_chat(options: ChatOptions) -> int:
    image = load_local_image(options.image) if options.image else None
    print(f"loading {options.checkpoint} ...", file=sys.stderr, flush=True)
    engine = Engine.load(
        options.checkpoint,
        device=options.device,
        dtype=options.dtype,
        load_in_bits=options.load_in_bits,
        device_map=options.device_map,
        max_batch_size=1,
    )
    session = ChatSession(engine, options.params, image)
    if options.query is not None:
        print(session.ask(options.query))
        return 0
    return repl(session, sys.stdin, sys.stdout, sys.stderr)


def repl(session: ChatSession, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    """The interactive loop: one line per user turn, answers streamed as they are produced."""
    print(HELP, file=stderr, flush=True)
    while True:
        line = read_turn(stdin, stdout)
        if line is None:  # end of input
            stdout.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command, _, argument = text.partition(" ")
            if command == "/exit":
                return 0
            if command == "/reset":
                session.reset()
                print("(conversation cleared)", file=stderr, flush=True)
            elif command == "/image" and argument.strip():
                try:
                    session.change_image(load_local_image(argument.strip()))
                except ValueError as error:
                    print(f"error: {error}", file=stderr, flush=True)
                else:
                    print(f"(new conversation about {argument.strip()})", file=stderr, flush=True)
            else:
                print(HELP, file=stderr, flush=True)
            continue
        stdout.write("ASSISTANT: ")
        stdout.flush()
        try:
            for piece in session.stream(text):
                stdout.write(piece)
                stdout.flush()
        except ValueError as error:  # e.g. the conversation no longer fits the context
            print(f"\nerror: {error}", file=stderr, flush=True)
        except KeyboardInterrupt:  # Ctrl-C drops this answer, not the session
            print("\n(answer interrupted; not added to the conversation)", file=stderr, flush=True)
        stdout.write("\n")
        stdout.flush()


def read_turn(stdin: TextIO, stdout: TextIO) -> str | None:
    """One line from the user after a "USER: " prompt; None at end of input."""
    if stdin is sys.stdin and stdout is sys.stdout and stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())

        try:
            return input("USER: ")
        except EOFError:
            return None
    stdout.write("USER: ")
    stdout.flush()
    return stdin.readline() or None

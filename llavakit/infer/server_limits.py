"""What one request may cost the server, sized for the served model's context.

A prompt can never hold more than the model's context of tokens (`Engine.context_length`), and no
token of the tokenizer covers more characters than its longest vocabulary entry. So a request
whose text has more than `context x longest token` characters cannot fit, and is refused
without being tokenised; any request that is tokenised has at most that much text. Images are
sized the same way: each costs at least one crop's worth of feature tokens, so no more than
`context / tokens per image` of them can ever fit. The body limit follows from the two (text as
JSON, images as base64), so the bytes a client can make the server read, parse and hold are
bounded by what the model could use, not by how many images the operator allows.

The bound is exact for the tokenizers LLaVA models use (BPE and SentencePiece pieces cover at
most their own length in characters); the exact token count is still checked after
tokenisation, so the bound only decides whether tokenisation is worth attempting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llavakit.infer.engine import Engine
from llavakit.infer.server_protocol import ApiError

JSON_BYTES_PER_CHAR = 12
"""Most bytes one character of text can take in a JSON body (an escaped surrogate pair)."""
JSON_OVERHEAD_BYTES = 64 * 1024
"""Room for everything in a body that is not message text or image data."""
DATA_URL_HEADER_BYTES = 64
"""`data:image/<type>;base64,` and the JSON around one image URL."""


@dataclass(frozen=True)
class RequestBudget:
    """The most text, images and bytes one request may bring."""

    context_tokens: int
    """The model's context: the longest prompt plus answer it is run with."""
    chars_per_token: int
    """The most characters one token can cover: the tokenizer's longest vocabulary entry."""
    tokens_per_image: int
    """The fewest tokens one image becomes (one crop's features; AnyRes adds tiles to it)."""
    max_images: int
    """The operator's image limit, lowered to what the context can hold."""
    max_image_bytes: int

    @classmethod
    def for_engine(cls, engine: Engine, max_images: int, max_image_bytes: int) -> RequestBudget:
        processor = engine.processor
        context = engine.context_length
        vocabulary = processor.tokenizer.get_vocab()
        longest = max(len(token) for token in vocabulary)
        per_image = processor.image_tokens.fewest
        return cls(
            context_tokens=context,
            chars_per_token=max(1, longest),
            tokens_per_image=per_image,
            max_images=min(max_images, context // max(1, per_image)),
            max_image_bytes=max_image_bytes,
        )

    @property
    def max_text_chars(self) -> int:
        """More characters than this cannot be fewer tokens than the context."""
        return self.context_tokens * self.chars_per_token

    @property
    def max_body_bytes(self) -> int:
        """The largest body that could still hold a prompt that fits."""
        image_url = math.ceil(self.max_image_bytes * 4 / 3) + DATA_URL_HEADER_BYTES
        text = self.max_text_chars * JSON_BYTES_PER_CHAR
        return text + self.max_images * image_url + JSON_OVERHEAD_BYTES

    def check(self, messages: list[dict], n_images: int) -> None:
        """Refuse, before tokenising, a request that cannot fit the context."""
        chars = sum(len(message["content"]) for message in messages)
        at_least = math.ceil(chars / self.chars_per_token) + n_images * self.tokens_per_image
        if at_least > self.context_tokens:
            raise ApiError(
                400,
                f"the messages are at least {at_least} tokens ({chars} characters of text, "
                f"{n_images} images), more than the model's context of {self.context_tokens} "
                "tokens",
                param="messages",
                code="context_length_exceeded",
            )

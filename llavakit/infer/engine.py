"""The one generation engine behind the chat CLI, the server, the web UI and evaluation.

Requests with the same sampling settings are batched into one left-padded `generate` call with
a KV cache (transformers' own); each request keeps its own max_new_tokens and stop strings. Text
is streamed per request as it is produced, holding back anything that could still turn out to be
the start of a stop string, so a streamed answer always equals the non-streamed one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from llavakit.conversation import IMAGE_TOKEN
from llavakit.infer.batch_sizes import BatchSizes
from llavakit.model.llava import LlavaModel
from llavakit.processor import LlavaProcessor

TextCallback = Callable[[int, str], None]
"""on_text(request_index, new_text): called as each request's text grows."""


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens; temperature 0 means greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    """OpenAI's: subtracted once from the logit of every token the answer already contains."""
    frequency_penalty: float = 0.0
    """OpenAI's: subtracted from a token's logit once per time the answer already contains it."""
    stop: tuple[str, ...] = ()
    """Extra stop strings, on top of the template's end of turn."""
    seed: int | None = None
    """Seed for sampling; requests with different seeds are not batched together."""

    def batch_key(self) -> tuple:
        """Requests sharing this key can share one generate call."""
        return (
            self.temperature,
            self.top_p,
            self.top_k,
            self.repetition_penalty,
            self.presence_penalty,
            self.frequency_penalty,
            self.seed,
        )

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise ValueError(f"{name} must be between -2 and 2")


@dataclass
class Request:
    """A conversation ending in a user turn, its images (one per <image> tag) and sampling."""

    messages: list[dict]
    images: Sequence[Image.Image] = ()
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str
    """"stop" (end of turn or a stop string) or "length" (max_new_tokens reached)."""

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


def with_image_tags(messages: list[dict], n_images: int) -> list[dict]:
    """Put one <image> per image in front of the first user turn when the text names none."""
    if not n_images or any(IMAGE_TOKEN in str(m.get("content", "")) for m in messages):
        return messages
    out = [dict(m) for m in messages]
    first = next(i for i, m in enumerate(out) if m["role"] == "user")
    out[first]["content"] = f"{IMAGE_TOKEN}\n" * n_images + str(out[first]["content"])
    return out


class _RowText:
    """Incremental decoding of one row, with stop strings applied."""

    def __init__(
        self, processor: LlavaProcessor, stops: Sequence[str], eos_ids: set[int], limit: int
    ):
        self.processor = processor
        self.stops = [s for s in stops if s]
        self.eos_ids = eos_ids
        self.limit = limit
        self.ids: list[int] = []
        self.emitted = 0
        self.finish_reason: str | None = None

    def add(self, token: int) -> None:
        if self.finish_reason:
            return
        if token in self.eos_ids:
            self.finish_reason = "stop"
            return
        self.ids.append(token)
        if self.stop_index(self.raw_text()) is not None:
            self.finish_reason = "stop"
        elif len(self.ids) >= self.limit:
            self.finish_reason = "length"

    def raw_text(self) -> str:
        return self.processor.decode(self.ids, skip_special_tokens=True)

    def stop_index(self, text: str) -> int | None:
        hits = [text.find(s) for s in self.stops if s in text]
        return min(hits) if hits else None

    def final_text(self) -> str:
        text = self.raw_text()
        cut = self.stop_index(text)
        return (text if cut is None else text[:cut]).strip()

    def safe_prefix(self) -> str:
        """Text that can no longer change: not an unfinished character nor a stop-string prefix."""
        if self.finish_reason:
            return self.final_text()
        text = self.raw_text().rstrip("\ufffd")
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        text = text[: len(text) - hold] if hold else text
        return text.strip()  # trailing space may still end the answer, which final_text strips

    def delta(self) -> str:
        text = self.safe_prefix()
        if len(text) <= self.emitted:
            return ""
        new, self.emitted = text[self.emitted :], len(text)
        return new


class AnswerPenalties(LogitsProcessor):
    """OpenAI's presence and frequency penalties, over the tokens generated so far.

    `logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty`, where
    count[j] is how often token j occurs in this row's answer (never its prompt). Applied to the
    raw logits, before temperature and top-p, as OpenAI documents it; greedy decoding sees it too.
    """

    def __init__(self, presence_penalty: float, frequency_penalty: float):
        self.presence = presence_penalty
        self.frequency = frequency_penalty
        self.prompt_length: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # input_ids: [B, prompt + generated] (prompt empty when generating from embeddings)
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]  # the first call comes before any new token
        generated = input_ids[:, self.prompt_length :]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones(generated.shape, dtype=scores.dtype, device=scores.device)
        )  # [B, V]
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


class _Rows(StoppingCriteria, BaseStreamer):
    """Receives each step's tokens (as a streamer), tracks rows, and stops finished ones."""

    def __init__(self, rows: list[_RowText], on_text: TextCallback | None, indices: list[int]):
        self.rows = rows
        self.on_text = on_text
        self.indices = indices

    def put(self, value: torch.Tensor) -> None:
        if value.dim() == 2 and value.shape[1] != 1:
            return  # the prompt (empty when generating from embeddings)
        for position, (row, token) in enumerate(zip(self.rows, value.reshape(-1).tolist())):
            row.add(token)
            if self.on_text is not None:
                delta = row.delta()
                if delta:
                    self.on_text(self.indices[position], delta)

    def end(self) -> None:
        for position, row in enumerate(self.rows):
            row.finish_reason = row.finish_reason or "length"
            if self.on_text is not None:
                delta = row.delta()
                if delta:
                    self.on_text(self.indices[position], delta)

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        done = [row.finish_reason is not None for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class Engine:
    """Batched, streaming generation over a loaded llavakit model."""

    def __init__(self, model: LlavaModel, processor: LlavaProcessor, max_batch_size: int = 16):
        self.model = model.eval()
        self.processor = processor
        self.max_batch_size = max_batch_size
        self._lock = threading.Lock()
        self.eos_ids = self._eos_ids()
        self.stop_strings = self._template_stops()
        self.batch_sizes = BatchSizes()
        """Size of the generate calls so far, bounded (observability: shows batching at work)."""

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        device: str = "auto",
        dtype: str = "auto",
        load_in_bits: int | None = None,
        device_map: str | None = None,
        max_batch_size: int = 16,
    ) -> Engine:
        from llavakit.model.io import load_checkpoint

        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if dtype == "auto":
            dtype = (
                "float32"
                if device == "cpu"
                else ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
            )
        overrides = {"load_in_bits": load_in_bits} if load_in_bits else None
        model, processor = load_checkpoint(
            checkpoint,
            dtype=dtype,
            device=None if (device_map or load_in_bits) else device,
            overrides=overrides,
            device_map=device_map,
        )
        return cls(model, processor, max_batch_size=max_batch_size)

    @property
    def context_length(self) -> int:
        """Most tokens a prompt and its answer may fill together: the model's `max_length`, or
        the language model's position limit when that is smaller."""
        positions = getattr(self.model.language_model.config, "max_position_embeddings", None)
        length = self.processor.model_config.max_length
        return min(length, positions) if positions else length

    @property
    def model_name(self) -> str:
        return Path(self.model.config.language_model).parent.name or "llavakit"

    def _eos_ids(self) -> set[int]:
        ids = set()
        tokenizer = self.processor.tokenizer
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        configured = getattr(self.model.language_model.generation_config, "eos_token_id", None)
        if configured is not None:
            ids.update(configured if isinstance(configured, list) else [configured])
        stop = self.processor.template.stop_str
        if stop and stop in tokenizer.get_vocab():
            ids.add(tokenizer.convert_tokens_to_ids(stop))
        return ids

    def _template_stops(self) -> tuple[str, ...]:
        stop = self.processor.template.stop_str
        if not stop or stop in self.processor.tokenizer.get_vocab():
            return ()  # a single special token: handled as an end-of-sequence id
        return (stop,)

    # ---- public API ------------------------------------------------------------------------
    def generate(
        self, requests: Sequence[Request], on_text: TextCallback | None = None
    ) -> list[Completion]:
        """Complete every request; batches requests that can share a forward pass."""
        for request in requests:
            request.params.validate()
        results: list[Completion | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.params.batch_key(), []).append(index)
        with self._lock:
            for indices in groups.values():
                for start in range(0, len(indices), self.max_batch_size):
                    chunk = indices[start : start + self.max_batch_size]
                    for index, completion in zip(
                        chunk, self._run([requests[i] for i in chunk], chunk, on_text)
                    ):
                        results[index] = completion
        return results  # type: ignore[return-value]

    def complete(self, request: Request) -> Completion:
        return self.generate([request])[0]

    def stream(self, request: Request) -> Iterator[str]:
        """Yield text pieces of one request as they are produced."""
        import queue

        pieces: queue.Queue = queue.Queue()
        failure: list[BaseException] = []

        def work():
            try:
                self.generate([request], on_text=lambda _, text: pieces.put(text))
            except BaseException as error:  # re-raised in the caller's thread
                failure.append(error)
            finally:
                pieces.put(None)

        threading.Thread(target=work, daemon=True).start()
        while (piece := pieces.get()) is not None:
            yield piece
        if failure:
            raise failure[0]

    # ---- one batched call ------------------------------------------------------------------
    def _run(
        self, requests: list[Request], indices: list[int], on_text: TextCallback | None
    ) -> list[Completion]:
        batch = self.processor.prompt_batch(
            [with_image_tags(r.messages, len(r.images)) for r in requests],
            [list(r.images) for r in requests],
        )
        params = requests[0].params
        rows = [
            _RowText(
                self.processor,
                self.stop_strings + r.params.stop,
                self.eos_ids,
                r.params.max_new_tokens,
            )
            for r in requests
        ]
        tracker = _Rows(rows, on_text, indices)
        device = self.model.device
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(
                self.model.vision_tower.encoder.dtype
            )
        if params.seed is not None:
            torch.manual_seed(params.seed)
        config = GenerationConfig(
            max_new_tokens=max(r.params.max_new_tokens for r in requests),
            do_sample=params.temperature > 0,
            temperature=params.temperature if params.temperature > 0 else None,
            top_p=params.top_p if params.temperature > 0 else None,
            top_k=params.top_k if params.temperature > 0 and params.top_k else None,
            repetition_penalty=params.repetition_penalty,
            pad_token_id=self.processor.pad_token_id,
            eos_token_id=None,
        )
        penalties = LogitsProcessorList()
        if params.presence_penalty or params.frequency_penalty:
            penalties.append(AnswerPenalties(params.presence_penalty, params.frequency_penalty))
        self.batch_sizes.append(len(requests))
        self.model.generate(
            **inputs,
            generation_config=config,
            logits_processor=penalties,
            stopping_criteria=StoppingCriteriaList([tracker]),
            streamer=tracker,
        )
        prompt_lengths = batch["attention_mask"].sum(dim=1).tolist()
        return [
            Completion(row.final_text(), row.ids, n, row.finish_reason or "length")
            for row, n in zip(rows, prompt_lengths)
        ]

"""Dynamic batching for the server: requests that arrive together share one engine call.

HTTP handlers run on the asyncio event loop; generation runs on one scheduler thread. A handler
submits a `Job`; the scheduler waits for the first job, keeps collecting for a short window (or
until the batch is full), then runs the whole batch through `Engine.generate`. Requests that
arrive while a batch runs queue up and form the next one, so under load batches fill by
themselves and an idle server answers a lone request after at most one window.

Events (text deltas, the final completion, or a failure) go back to each job's asyncio queue
through `loop.call_soon_threadsafe`, the one asyncio-safe way to hand data from a thread to a loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field

from llavakit.infer.engine import Completion, Engine, Request

log = logging.getLogger("llavakit.serve")
POLL_S = 0.002
"""How often a collecting scheduler looks again at requests still being prepared."""


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    completion: Completion


@dataclass(frozen=True)
class Failed:
    error: Exception


class AdmissionGate:
    """Counts requests admitted and not yet finished; refuses entry beyond `limit`.

    A slot is held from admission until the scheduler has finished the job, whatever the client
    does meanwhile (a client that hangs up mid-stream still costs generation time).
    """

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"the concurrency limit must be >= 1, got {limit}")
        self.limit = limit
        self.count = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


@dataclass
class Job:
    """One admitted request, and the queue its events arrive on (read on the event loop)."""

    request: Request
    stream: bool
    loop: asyncio.AbstractEventLoop
    gate: AdmissionGate
    events: asyncio.Queue = field(default_factory=asyncio.Queue)

    def deliver(self, event: TextDelta | Finished | Failed) -> None:
        """Called from the scheduler thread; a final event also frees the job's slot."""
        if not isinstance(event, TextDelta):
            self.gate.leave()  # before the client can see the answer and send the next request
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            pass  # the loop has closed (server shutting down): nobody is waiting any more

    async def outcome(self) -> Completion:
        """Wait for the end of the job (non-streaming callers); re-raises its failure."""
        while True:
            event = await self.events.get()
            if isinstance(event, Finished):
                return event.completion
            if isinstance(event, Failed):
                raise event.error


class BatchScheduler:
    """Collects jobs into batches of at most `max_batch_size` and runs each as one engine call.

    A batch starts once no new job has arrived for `window_s`, and at the latest `max_wait_s`
    after its first job. Until then it also waits for requests already admitted but still being
    prepared (images decoding), and for as many jobs as the previous batch had when that batch
    ended just before: clients whose answers arrived together (chat users, benchmark and eval
    loops) send their next requests at about the same time, but rarely to the millisecond, and
    a batch started at the first of them would split the group for good (8 clients served as
    alternating batches of 1 and 7). A lone client still waits only one `window_s`.
    """

    def __init__(self, engine: Engine, max_batch_size: int, window_s: float, max_wait_s: float):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not 0 <= window_s <= max_wait_s:
            raise ValueError(
                f"need 0 <= batch window ({window_s} s) <= max batch wait ({max_wait_s} s)"
            )
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.window_s = window_s
        self.max_wait_s = max_wait_s
        self._pending: queue.Queue[Job | None] = queue.Queue()
        self._preparing = 0
        self._last_size = 0
        self._last_end = -math.inf
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="batch-scheduler", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def announce(self) -> None:
        """A request was admitted and is being prepared; `submit` or `withdraw` follows."""
        with self._lock:
            self._preparing += 1

    def withdraw(self) -> None:
        """An announced request failed before reaching the scheduler."""
        with self._lock:
            self._preparing -= 1

    def submit(self, job: Job) -> None:
        """Queue an announced request."""
        with self._lock:
            self._preparing -= 1
        self._pending.put(job)

    def close(self, timeout: float = 10.0) -> None:
        """Finish the batch in progress, then stop (jobs still queued are failed)."""
        self._pending.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            batch, closing = self._collect()
            if batch:
                self._run(batch)
                self._last_size, self._last_end = len(batch), time.monotonic()
            if closing:
                break
        while True:  # fail whatever arrived after close() so no handler waits forever
            try:
                job = self._pending.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.deliver(Failed(RuntimeError("the server is shutting down")))

    def _collect(self) -> tuple[list[Job], bool]:
        first = self._pending.get()
        if first is None:
            return [], True
        batch = [first]
        last_arrival = time.monotonic()
        give_up = last_arrival + self.max_wait_s
        returning = self._last_size if last_arrival - self._last_end < self.max_wait_s else 0
        while len(batch) < self.max_batch_size:
            now = time.monotonic()
            expecting = self._preparing > 0 or len(batch) < returning
            quiet_until = give_up if expecting else min(last_arrival + self.window_s, give_up)
            if now >= quiet_until:
                break
            try:
                # Short waits, so a request that finishes preparing is noticed promptly.
                job = self._pending.get(timeout=min(quiet_until - now, POLL_S))
            except queue.Empty:
                continue
            if job is None:
                return batch, True
            batch.append(job)
            last_arrival = time.monotonic()
        return batch, False

    def _run(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        streamed: set[int] = set()
        try:
            completions = self.engine.generate(
                [job.request for job in batch], on_text=self._streamer(batch, streamed)
            )
        except Exception as error:
            log.warning("batch of %d failed: %s", len(batch), error)
            for index, job in enumerate(batch):
                if len(batch) == 1 or index in streamed:
                    job.deliver(Failed(error))  # text already sent cannot be taken back
                else:
                    self._run([job])  # one bad request must not fail its neighbours
            return
        log.info(
            "batch of %d request(s): %d tokens in %.2f s",
            len(batch),
            sum(c.completion_tokens for c in completions),
            time.perf_counter() - started,
        )
        for job, completion in zip(batch, completions):
            job.deliver(Finished(completion))

    @staticmethod
    def _streamer(batch: list[Job], streamed: set[int]):
        def on_text(index: int, text: str) -> None:
            if batch[index].stream:
                streamed.add(index)
                batch[index].deliver(TextDelta(text))

        return on_text

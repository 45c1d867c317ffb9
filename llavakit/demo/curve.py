"""Accuracy against training time: the held-out benchmark, asked while stage 2 trains.

The demo's targets may not all be reachable in ten minutes on a laptop; the curve shows how far
each category got at each moment, so a longer `--minutes` budget can be judged before it is
spent. The model is evaluated in place (no checkpoint is written) every `every_s` seconds of
training and once at the end; evaluation time is excluded from the time axis.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback


class AccuracyCurve(TrainerCallback):
    """Scores the training model on `questions` (benchmark JSON dicts) at regular intervals.

    `points` holds `{"train_seconds", "step", "accuracy": {category: fraction}}`, in order.
    """

    def __init__(self, questions: list[dict], image_folder: Path, processor, every_s: float):
        if every_s <= 0:
            raise ValueError(f"the curve's interval must be positive, got {every_s} s")
        self.questions = questions
        self.image_folder = Path(image_folder)
        self.processor = processor
        self.every_s = every_s
        self.points: list[dict] = []
        self._trained_s = 0.0
        self._since: float | None = None
        self._next = every_s
        self.paused_seconds = 0.0
        """Seconds spent scoring: not training time (a TimeBudget leaves them out)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self._since = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._trained_s += time.perf_counter() - self._since
        if self._trained_s >= self._next or control.should_training_stop:
            self._score(model, state.global_step)
            self._next = self._trained_s + self.every_s
        self._since = time.perf_counter()

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.points or self.points[-1]["step"] != state.global_step:
            self._score(model, state.global_step)

    def _score(self, model, step: int) -> None:
        start = time.perf_counter()
        self._evaluate(model, step)
        self.paused_seconds += time.perf_counter() - start

    def _evaluate(self, model, step: int) -> None:
        from llavakit.eval.answer import AnswerSettings, answer_questions
        from llavakit.eval.tasks.world import score_world
        from llavakit.infer.engine import Engine

        was_training = model.training
        engine = Engine(model, self.processor, max_batch_size=32)
        with tempfile.TemporaryDirectory() as folder:
            questions_path, answers_path = Path(folder) / "q.jsonl", Path(folder) / "a.jsonl"
            questions_path.write_text("".join(json.dumps(q) + "\n" for q in self.questions))
            answer_questions(
                engine,
                self.questions,
                self.image_folder,
                answers_path,
                AnswerSettings(batch_size=32, max_new_tokens=96),
                model_id=f"step-{step}",
            )
            result = score_world(questions_path, answers_path)
        model.train(was_training)
        accuracy = {c: result["metrics"][c] / 100 for c in result["n_questions_by_category"]}
        self.points.append(
            {"train_seconds": round(self._trained_s, 1), "step": step, "accuracy": accuracy}
        )


def curve_questions(questions: list[dict], per_category: int) -> list[dict]:
    """The first `per_category` questions of each category (a cheap, fixed subset)."""
    kept, seen = [], {}
    for question in questions:
        seen[question["category"]] = seen.get(question["category"], 0) + 1
        if seen[question["category"]] <= per_category:
            kept.append(question)
    return kept

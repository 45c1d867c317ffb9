"""Teacher prompts kept as text files, so they can be read, reviewed and replaced without code.

A prompt folder holds one sub-folder per task (`conversation/`, `detail/`, `complex/`, ...) with
`system.txt` and few-shot examples `NN_context.txt` / `NN_output.txt`, plus optional question
pools (`detail_questions.txt`, `brief_questions.txt`, one question per line). Users point at their
own folder; a question pool their folder lacks falls back to ours, because pools are not teacher
prompts but the human side of the generated records.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

BUILTIN_PROMPTS_DIR = Path(__file__).parent / "prompts"
"""The prompts shipped with llavakit (written for this project in the spirit of LLaVA)."""

_EXAMPLE_NAME = re.compile(r"^(\d+)_(context|output)\.txt$")


@dataclass(frozen=True)
class FewShotExample:
    """One hand-written demonstration: a textual context and the answer we want for it."""

    context: str
    output: str


@dataclass(frozen=True)
class TaskPrompt:
    """The system message and few-shot examples of one generation task."""

    task: str
    system: str
    examples: tuple[FewShotExample, ...]

    def messages(self, context_text: str) -> list[dict[str, str]]:
        """Chat messages for one image: system, each example as a user/assistant pair, context."""
        messages = [{"role": "system", "content": self.system}]
        for example in self.examples:
            messages.append({"role": "user", "content": example.context})
            messages.append({"role": "assistant", "content": example.output})
        messages.append({"role": "user", "content": context_text})
        return messages


def _read_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"{path}: prompt file is empty")
    return text


def load_task_prompt(task: str, prompts_dir: Path | None = None) -> TaskPrompt:
    """Read `<prompts_dir>/<task>/`; every `NN_context.txt` needs its `NN_output.txt`."""
    folder = Path(prompts_dir or BUILTIN_PROMPTS_DIR) / task
    system_path = folder / "system.txt"
    if not system_path.is_file():
        raise FileNotFoundError(f"{system_path}: no system prompt for task {task!r}")
    parts: dict[str, dict[str, Path]] = {}
    for path in folder.iterdir():
        match = _EXAMPLE_NAME.match(path.name)
        if match:
            parts.setdefault(match.group(1), {})[match.group(2)] = path
    examples = []
    for number in sorted(parts, key=int):
        pair = parts[number]
        for kind in ("context", "output"):
            if kind not in pair:
                raise ValueError(f"{folder}: example {number} has no {number}_{kind}.txt")
        examples.append(FewShotExample(_read_text(pair["context"]), _read_text(pair["output"])))
    return TaskPrompt(task=task, system=_read_text(system_path), examples=tuple(examples))


def load_question_pool(name: str, prompts_dir: Path | None = None) -> tuple[str, ...]:
    """Questions of `<name>.txt` (user's folder first, then ours), one per non-blank line."""
    candidates = [Path(prompts_dir) / f"{name}.txt"] if prompts_dir else []
    candidates.append(BUILTIN_PROMPTS_DIR / f"{name}.txt")
    path = next((candidate for candidate in candidates if candidate.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"no question pool {name}.txt in {' or '.join(map(str, candidates))}"
        )
    questions = tuple(
        line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    )
    if not questions:
        raise ValueError(f"{path}: question pool is empty")
    return questions


def draw_question(pool: tuple[str, ...], seed: int, key: str) -> str:
    """A question chosen by (seed, record key), not by position: reruns and resumed runs agree."""
    return random.Random(f"{seed}:{key}").choice(pool)

"""Teacher prompts kept as text files, so they can be read, reviewed and replaced without code.

A prompt folder holds one sub-folder per task (`conversation/`, `detail/`, `complex/`, ...) with
`system.txt` and few-shot examples `NN_context.txt` / `NN_output.txt`, plus optional question
pools (`detail_questions.txt`, `brief_questions.txt`, one question per line). Users point at their
own folder; a question pool their folder lacks falls back to ours, because pools are not teacher
prompts but the human side of the generated records.

The official LLaVA folder (`playground/data/prompts/`) is read as it is: task folders
`conversation/`, `detail_description/`, `complex_reasoning/`, each with `system_message.txt` and
examples `NNN_caps.txt` (the context) / `NNN_conv.txt` (the answer).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

BUILTIN_PROMPTS_DIR = Path(__file__).parent / "prompts"
"""The prompts shipped with llavakit (written for this project in the spirit of LLaVA)."""


@dataclass(frozen=True)
class _Layout:
    """How one kind of prompt folder names its files."""

    name: str
    system: str
    """File name of the system message."""
    example: re.Pattern
    """Example file names: group 1 the example number, group 2 the part."""
    parts: dict[str, str]
    """Part in the file name -> "context" or "output"."""


_LAYOUTS = (
    _Layout(
        "llavakit",
        "system.txt",
        re.compile(r"^(\d+)_(context|output)\.txt$"),
        {"context": "context", "output": "output"},
    ),
    _Layout(
        "official LLaVA",
        "system_message.txt",
        re.compile(r"^(\d+)_(caps|conv)\.txt$"),
        {"caps": "context", "conv": "output"},
    ),
)
_OFFICIAL_TASK_FOLDERS = {"detail": "detail_description", "complex": "complex_reasoning"}
"""Task folders the official LLaVA prompt folder names differently."""


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
    """Read `<prompts_dir>/<task>/` in either layout; every example needs both of its parts."""
    folder = _task_folder(task, Path(prompts_dir or BUILTIN_PROMPTS_DIR))
    layout = _layout_of(folder, task)
    parts: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        match = layout.example.match(path.name)
        if match:
            parts.setdefault(match.group(1), {})[match.group(2)] = path
            continue
        other = next((o for o in _LAYOUTS if o is not layout and o.example.match(path.name)), None)
        if other is not None:
            raise ValueError(
                f"{path}: named like a {other.name} example, in a folder of the "
                f"{layout.name} layout ({layout.system}); use one layout per folder"
            )
    examples = []
    for number in sorted(parts, key=int):
        pair = parts[number]
        files = {kind: pair.get(part) for part, kind in layout.parts.items()}
        for part, kind in layout.parts.items():
            if files[kind] is None:
                raise ValueError(f"{folder}: example {number} has no {number}_{part}.txt")
        examples.append(FewShotExample(_read_text(files["context"]), _read_text(files["output"])))
    system = _read_text(folder / layout.system)
    return TaskPrompt(task=task, system=system, examples=tuple(examples))


def _task_folder(task: str, prompts_dir: Path) -> Path:
    """`<prompts_dir>/<task>`, or the official folder name for that task."""
    names = [task] + ([_OFFICIAL_TASK_FOLDERS[task]] if task in _OFFICIAL_TASK_FOLDERS else [])
    found = [prompts_dir / name for name in names if (prompts_dir / name).is_dir()]
    if len(found) > 1:
        raise ValueError(
            f"{prompts_dir}: both {found[0].name}/ and {found[1].name}/ hold prompts for task "
            f"{task!r}; keep one"
        )
    return found[0] if found else prompts_dir / task


def _layout_of(folder: Path, task: str) -> _Layout:
    """The layout whose system-message file the folder has (exactly one of them)."""
    present = [layout for layout in _LAYOUTS if (folder / layout.system).is_file()]
    if not present:
        names = " or ".join(layout.system for layout in _LAYOUTS)
        raise FileNotFoundError(
            f"{folder / _LAYOUTS[0].system}: no system prompt for task {task!r} (expected {names})"
        )
    if len(present) > 1:
        raise ValueError(
            f"{folder}: both {present[0].system} and {present[1].system}; keep one system prompt"
        )
    return present[0]


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

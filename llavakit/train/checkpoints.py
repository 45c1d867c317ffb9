"""Checkpoint folders a kill cannot break, and choosing the one to resume from.

Every process writes a checkpoint into `OUTPUT/.incomplete/checkpoint-N/`; when all are done,
the main process records each file's size in `manifest.json` and renames the folder to
`OUTPUT/checkpoint-N` in one step. A kill at any moment therefore leaves either the complete
folder or nothing under the name resume looks at.

Two records describe a sealed folder, each the one home of its fact: the manifest holds the size
of every file (optimizer and DeepSpeed/FSDP state included: cheap to check, and enough to see an
unfinished or cut file), and config.json, like every llavakit checkpoint's, holds the SHA-256 of
the weight files the save wrote (model/integrity.py: their bytes). Resume takes the newest
`checkpoint-N` whose trainer_state.json reads and whose files match both records, and names each
one it skips and why (a folder damaged later, or written by a version without these guarantees),
so the folder it picks is one `llavakit.load` also accepts. The final model is staged the same way
and its entries renamed into OUTPUT, config.json last: a folder without config.json is not a
checkpoint, so a half-moved one is never loaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from llavakit.config import ConfigError
from llavakit.files import fsync_folder, write_text_atomic
from llavakit.model.integrity import verify_checksums
from llavakit.model.io import CheckpointError, read_checkpoint_config

log = logging.getLogger(__name__)

STAGING = ".incomplete"
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.json"
CONFIG = "config.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def staging_folder(output_dir: str | Path, name: str) -> Path:
    return Path(output_dir) / STAGING / name


def seal(folder: Path) -> None:
    """Flush every file to disk and record its size in the manifest (written last)."""
    sizes = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        sizes[str(path.relative_to(folder))] = path.stat().st_size
    write_text_atomic(folder / MANIFEST, json.dumps({"files": sizes}, indent=1))


def publish(staged: Path, final: Path) -> None:
    """Rename a sealed folder into place, replacing a stale folder of the same name."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    fsync_folder(final.parent)


def publish_into(staged: Path, destination: Path) -> None:
    """Move a staged checkpoint's entries into `destination`, config.json last (see above)."""
    destination.mkdir(parents=True, exist_ok=True)
    (destination / CONFIG).unlink(missing_ok=True)
    entries = sorted(staged.iterdir(), key=lambda p: p.name == CONFIG)
    for entry in entries:
        target = destination / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    fsync_folder(destination)
    staged.rmdir()


def remove_empty_staging(output_dir: str | Path) -> None:
    try:
        (Path(output_dir) / STAGING).rmdir()
    except OSError:
        pass  # absent, or holding another save


def read_trainer_state(folder: Path) -> dict:
    """trainer_state.json as a mapping, or ValueError naming the file and what is wrong."""
    path = folder / TRAINER_STATE
    if not path.is_file():
        raise ValueError(f"{path} does not exist (the save did not finish)")
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read ({error})") from None
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise ValueError(f"{path}: no integer global_step (not a Trainer state)")
    return state


def problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from, in one line naming the file; None when it can."""
    try:
        read_trainer_state(folder)
    except ValueError as error:
        return str(error)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None  # written before manifests; trainer_state.json is the Trainer's last file
    try:
        sizes = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        return f"{manifest}: not a valid manifest ({error})"
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing (listed in {MANIFEST})"
        if path.stat().st_size != size:
            return f"{path} is {path.stat().st_size} bytes, {size} were written"
    return _weights_problem(folder)


def _weights_problem(folder: Path) -> str | None:
    """Why the weight files config.json recorded checksums for are not as saved; None when they
    are, or when the save wrote no config.json (ZeRO-3 without gathered weights)."""
    if not (folder / CONFIG).is_file():
        return None
    try:
        _, document = read_checkpoint_config(folder)
        verify_checksums(folder, document.get("checksums") or {})
    except (CheckpointError, ConfigError) as error:
        return str(error)
    return None


def written_under(folder: Path) -> str:
    """Which strategy wrote a Trainer checkpoint: its optimizer state's format depends on it."""
    names = {path.name for path in folder.iterdir()}
    if any(name.startswith(("pytorch_model_fsdp", "optimizer_0")) for name in names):
        return "FSDP"
    if "latest" in names or any(name.startswith("global_step") for name in names):
        return "DeepSpeed"
    return "one process or DDP"


def check_same_strategy(folder: Path, strategy: str) -> None:
    """Refuse, in one line, to resume optimizer state written under another strategy."""
    written = written_under(folder)
    if written != strategy:
        raise ValueError(
            f"{folder} was written under {written} and this run uses {strategy}: resume it with "
            "the strategy that wrote it, or start a new train.output_dir (its trained weights "
            "load anywhere with llavakit.load)"
        )


def newest_complete(output_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest resumable `checkpoint-N` in output_dir, and a line for each one skipped."""
    output_dir = Path(output_dir)
    skipped = [
        f"{folder}: an interrupted save, never renamed into place"
        for folder in sorted((output_dir / STAGING).glob("checkpoint-*"))
    ]
    numbered = []
    for folder in output_dir.glob("checkpoint-*"):
        match = _CHECKPOINT_NAME.match(folder.name)
        if match and folder.is_dir():
            numbered.append((int(match.group(1)), folder))
    for _, folder in sorted(numbered, reverse=True):
        reason = problem(folder)
        if reason is None:
            return folder, skipped
        skipped.append(reason)
    return None, skipped

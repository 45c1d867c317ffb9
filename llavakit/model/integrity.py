"""Weight files we are about to trust: safetensors only, whole, and unchanged since they were saved.

Three checks, each ending in a one-line error that names the file and what is wrong with it:
- no pickle: a folder that offers only PyTorch `.bin` weights is refused, with the command that
  converts it (`llavakit convert-bin`, the one place anything is unpickled, and only on request);
- structure: a `.safetensors` file's header is read before any loader sees the file, so an empty,
  truncated or foreign file is named as such instead of surfacing as a loader's traceback;
- content: a llavakit checkpoint records the SHA-256 of each weight file it wrote (`checksums` in
  its config.json) and loading verifies them, so bytes corrupted behind a valid header are an
  error, not a model that quietly answers nonsense.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HEADER_LIMIT = 100_000_000
"""Largest header safetensors itself accepts (bytes)."""
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
TRAINING_LEFTOVERS = frozenset(
    {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth"}
)
"""Pickles a training run leaves beside its weights; they hold no weights and are never read."""
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive around its pickle


class CheckpointError(ValueError):
    """A checkpoint or model folder is missing something or is not what it claims.

    (Defined here, beside the weight checks, and used through `llavakit.model.io`.)"""


class WeightFileError(CheckpointError):
    """A weight file cannot be trusted or read; the message names it and says why."""


def pickle_refusal(path: Path) -> WeightFileError:
    """The error for pickled weights: what the file is, why it is refused, how to convert it."""
    path = Path(path)
    if path.name.startswith(("pytorch_model", "model")):  # one shard of a model folder
        target, suggested = path.parent, path.parent.with_name(f"{path.parent.name}-safetensors")
    else:
        target, suggested = path, path.with_suffix(".safetensors")
    return WeightFileError(
        f"{path} holds pickled PyTorch weights; llavakit reads weights from safetensors only "
        "(unpickling can run code hidden in the file). Convert it once with "
        f"`llavakit convert-bin {target} {suggested}` (torch's restricted loader, "
        "weights_only=True) and use the converted copy"
    )


def pickled_weight_files(folder: Path) -> list[Path]:
    """A folder's pickled weight files (training leftovers such as optimizer.pt excluded)."""
    return sorted(
        path
        for path in Path(folder).iterdir()
        if path.suffix in PICKLE_SUFFIXES and path.name not in TRAINING_LEFTOVERS
    )


def require_safetensors(folder: str | Path, what: str) -> list[Path]:
    """The `.safetensors` files of a Hugging Face folder, each structurally checked.

    A folder with pickled weights only is refused (see `pickle_refusal`); when both kinds are
    present only the safetensors are ever read (loaders are called with use_safetensors=True).
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = pickled_weight_files(folder)
        if pickled:
            raise pickle_refusal(pickled[0])
        raise WeightFileError(f"{what} folder {folder} has no weights (*.safetensors)")
    for path in files:
        check_safetensors(path)
    return files


def check_safetensors(path: str | Path) -> None:
    """Raise WeightFileError unless the file is a complete safetensors file (header and size).

    Reads the header only: that the file is long enough for the header it declares, that the
    header is JSON naming tensors with byte ranges, and that those ranges end exactly where the
    file does (a truncated copy ends early; a foreign file declares nonsense).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: weight file not found")
    size = path.stat().st_size
    if size == 0:
        raise WeightFileError(f"{path}: empty file (0 bytes), not safetensors weights")
    if size < 8:
        raise WeightFileError(f"{path}: {size} bytes, too short for a safetensors header")
    with path.open("rb") as handle:
        head = handle.read(9)  # the header length, then a safetensors header's "{"
        if head.startswith(_ZIP_MAGIC) and head[8:] != b"{":
            raise pickle_refusal(path)
        header_length = int.from_bytes(head[:8], "little")
        handle.seek(8)
        if header_length > HEADER_LIMIT or 8 + header_length > size:
            raise WeightFileError(
                f"{path}: not a complete safetensors file: it declares a {header_length}-byte "
                f"header but has {size} bytes in all (truncated, or another format)"
            )
        raw = handle.read(header_length)
    try:
        header = json.loads(raw)
    except ValueError:
        raise WeightFileError(f"{path}: not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise WeightFileError(f"{path}: not a safetensors file: its header is not a JSON object")
    data_size = size - 8 - header_length
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise WeightFileError(f"{path}: malformed header: tensor {name!r} has no byte range")
        end = max(end, offsets[1])
    if end > data_size:
        raise WeightFileError(
            f"{path}: truncated: its header describes {end} bytes of tensor data but the file "
            f"holds {data_size}"
        )
    if end < data_size:
        raise WeightFileError(
            f"{path}: {data_size - end} unexpected bytes after the last tensor (not a file "
            "safetensors wrote, or two files run together)"
        )


# ---- checksums -------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def record_checksums(folder: str | Path, parts: list[str]) -> dict[str, str]:
    """SHA-256 of each weight file among `parts` (files, or sub-folders whose *.safetensors are
    taken) of a checkpoint folder, keyed by the path relative to it; parts not there are skipped."""
    folder = Path(folder)
    files: list[Path] = []
    for part in parts:
        path = folder / part
        if path.is_dir():
            files += sorted(path.glob("*.safetensors"))
        elif path.is_file():
            files.append(path)
    return {path.relative_to(folder).as_posix(): file_sha256(path) for path in files}


def verify_checksums(folder: str | Path, recorded: dict[str, str]) -> None:
    """Every file a checkpoint recorded is there, whole, and has the bytes it had when saved."""
    folder = Path(folder)
    for name, expected in recorded.items():
        path = folder / name
        if not path.is_file():
            raise WeightFileError(f"{path}: missing; the checkpoint was saved with it")
        check_safetensors(path)
        actual = file_sha256(path)
        if actual != expected:
            raise WeightFileError(
                f"{path}: corrupt: its SHA-256 is {actual[:16]}... but it was {expected[:16]}... "
                "when the checkpoint was saved (bytes changed on disk or in a copy)"
            )

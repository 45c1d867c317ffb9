"""A contact sheet of a world's images with their boxes, for people to check by eye."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from llavakit.world.annotations import load_split

_CELL = 192


def contact_sheet(
    world_dir: str | Path, out_path: str | Path, split: str = "train", n: int = 24, columns: int = 6
) -> Path:
    """Save a grid of the first `n` images of `split`, object boxes in red, word boxes in blue."""
    images = load_split(world_dir, split).images[:n]
    if not images:
        raise ValueError(f"{world_dir}: split {split!r} has no images")
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * _CELL, rows * _CELL), "white")
    for index, annotation in enumerate(images):
        path = Path(world_dir) / "images" / annotation.file_name
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        scale = _CELL / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
        draw = ImageDraw.Draw(image)
        boxes = [(o.bbox, (220, 0, 0)) for o in annotation.objects if annotation.is_scene]
        boxes += [(t.bbox, (0, 0, 220)) for t in annotation.texts if t.level == "word"]
        for (x, y, w, h), colour in boxes:
            draw.rectangle(
                (x * scale, y * scale, (x + w) * scale - 1, (y + h) * scale - 1), outline=colour
            )
        sheet.paste(image, ((index % columns) * _CELL, (index // columns) * _CELL))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path)
    return out_path

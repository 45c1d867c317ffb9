"""Shipped training recipes (YAML), addressable by name."""

from __future__ import annotations

from pathlib import Path

RECIPE_DIR = Path(__file__).parent


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    """A path as given if it exists, else the shipped recipe of that name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = RECIPE_DIR / f"{path.stem}.yaml"
    if shipped.exists():
        return shipped
    raise FileNotFoundError(
        f"recipe {name_or_path} not found; shipped recipes: {', '.join(recipe_names())}"
    )

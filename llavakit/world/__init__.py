"""The embedded synthetic world: scenes and text-rich images with exact annotations, a
template-based teacher that writes instruction data from them, and a benchmark with exact
answers, so the whole LLaVA + LLaVAR pipeline runs and can be checked on a laptop CPU.
"""

from llavakit.world.annotations import (
    WorldImage,
    WorldObject,
    WorldSplit,
    WorldText,
    load_split,
)
from llavakit.world.benchmark import build_benchmark, score_answer, write_benchmark
from llavakit.world.generate import WorldConfig, WorldSummary, generate_world
from llavakit.world.teacher import SymbolicTeacher

__all__ = [
    "SymbolicTeacher",
    "WorldConfig",
    "WorldImage",
    "WorldObject",
    "WorldSplit",
    "WorldSummary",
    "WorldText",
    "build_benchmark",
    "generate_world",
    "load_split",
    "score_answer",
    "write_benchmark",
]

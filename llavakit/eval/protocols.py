"""Scoring protocols: which rules decide whether an answer is right, and where they come from.

A benchmark's number means something only together with the rules that produced it: ScienceQA
accuracy read by the official script (a bare letter, "X. ", or "The answer is X.") and by a
forgiving parser differ by tens of points on the same answers. So every scorer offers named
protocols, `official` (the reference implementation's decision on every item, named in
`Protocol.reference`) is the default, every result records the protocol it was scored with,
and a report never puts numbers of different protocols in one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OFFICIAL = "official"
"""The default protocol name of every benchmark."""


@dataclass(frozen=True)
class Protocol:
    """One named way of scoring a benchmark."""

    name: str
    reference: str
    """What it reproduces (repository and file) or, for our own protocols, how it decides."""

    def stamp(self) -> dict[str, Any]:
        """The fields every result dict carries about its protocol."""
        return {"protocol": self.name, "protocol_reference": self.reference}


def choose(protocols: Mapping[str, Protocol], name: str | None, benchmark: str) -> Protocol:
    """The protocol called `name` (None: `official`); a clear error naming the choices."""
    name = name or OFFICIAL
    if name not in protocols:
        raise ValueError(
            f"{benchmark} has no scoring protocol {name!r}; choose one of {sorted(protocols)}"
        )
    return protocols[name]

"""Faults a real feed has, each with a rate; all off unless asked for."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Faults:
    duplicate_rate: float = 0.0  # the same event delivered twice in one drop
    malformed_rate: float = 0.0  # a line cut short: not valid JSON

    def apply(self, lines: list[str], rng: np.random.Generator) -> list[str]:
        if self.malformed_rate:
            broken = np.flatnonzero(rng.random(len(lines)) < self.malformed_rate)
            for i in broken:
                lines[i] = lines[i][: len(lines[i]) // 2]
        if self.duplicate_rate:
            again = np.flatnonzero(rng.random(len(lines)) < self.duplicate_rate)
            lines = lines + [lines[i] for i in again]
        return lines

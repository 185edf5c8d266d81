"""What ``surerank robustness`` measures and how hard: the checks, their seeds and sizes."""

from __future__ import annotations

from dataclasses import dataclass

from surerank.errors import InputError
from surerank.robustness.typos import TYPO_KINDS

CHECKS = ("order", "position", "typos", "trap", "depth")


@dataclass
class RobustnessConfig:
    """What to measure and how hard; the defaults finish in minutes for a small bi-encoder on DL19."""

    checks: tuple[str, ...] = CHECKS
    depth: int | None = None  # rerank only the first-stage top ``depth`` in the clean/typo/trap runs
    shuffles: int = 5
    order_depth: int | None = None  # candidates per list in the order check (default: ``depth``)
    typo_depth: int | None = None  # first-stage top N reranked in the typo check (default: ``depth``)
    position_list_size: int = 10
    typo_kinds: tuple[str, ...] = TYPO_KINDS
    typo_seeds: tuple[int, ...] = (0, 1, 2)
    depths: tuple[int, ...] = (10, 20, 50, 100)
    rel_level: int = 2
    seed: int = 0
    max_queries: int | None = None
    one_call: bool = True  # every ranking of every check in one rank_many call (see run_robustness)

    def validate(self) -> None:
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise InputError(f"checks: unknown {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
        bad_kinds = [k for k in self.typo_kinds if k not in TYPO_KINDS]
        if bad_kinds:
            raise InputError(
                f"typo_kinds: unknown {', '.join(bad_kinds)}; choose from {', '.join(TYPO_KINDS)}"
            )
        for name in ("depth", "order_depth", "typo_depth", "max_queries"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        if self.shuffles < 1:
            raise InputError(f"shuffles must be at least 1, got {self.shuffles}")
        if self.position_list_size < 2:
            raise InputError(f"position_list_size must be at least 2, got {self.position_list_size}")
        if not self.depths or any(d < 1 for d in self.depths):
            raise InputError(f"depths must be positive integers, got {list(self.depths)}")
        if not self.typo_seeds:
            raise InputError("typo_seeds: give at least one seed")



__all__ = ["CHECKS", "RobustnessConfig"]

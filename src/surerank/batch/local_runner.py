"""The local runner: shard after shard in this process, with one ranker built once.

It and the Ray runner (:mod:`surerank.batch.ray_runner`) both call :func:`surerank.batch.shards.rank_shard`
on whole shards, so a ranker sees the same queries in the same grouping under either and their outputs
agree.  Results go back to the caller shard by shard through ``on_result``; the caller writes shard files
and the manifest (only the driver writes).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from surerank.batch.shards import rank_shard
from surerank.errors import SureRankError
from surerank.registry import create

ResultCallback = Callable[[int, Any], None]


@dataclass
class RankerConfig:
    """A ranker as a name plus options, so each worker can build its own copy once."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        """A registered name, or ``package.module:Class`` for a ranker class that is not registered."""
        if ":" not in self.name:
            return create(self.name, **self.options)
        module_name, _, attr = self.name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as error:
            raise SureRankError(f"--ranker {self.name!r}: cannot import it ({error})") from error
        return cls(**self.options)


def run_local(
    tables: Sequence[tuple[int, Any]], ranker: RankerConfig, keep_text: bool, on_result: ResultCallback
) -> None:
    """Rank shard after shard in this process; a failure names its shard."""
    model = ranker.build()
    for shard_id, table in tables:
        on_result(shard_id, rank_shard(model, table, keep_text))

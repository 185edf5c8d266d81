"""Length-sorted, token-budget batch planning: little padding, bounded memory per batch."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import numpy as np

from surerank.engine.text.tokenize import Sequence


def plan_batches(lengths: Seq[int], max_batch: int, token_budget: int) -> list[np.ndarray]:
    """Group sequence indices into batches, longest first.

    Sequences are sorted by length (descending: the heaviest batch runs first, so an out-of-memory
    shows up at once), then packed while ``batch_size * longest_length <= token_budget`` and
    ``batch_size <= max_batch``.  A single sequence longer than the budget gets a batch of its own.
    Every index appears in exactly one batch.
    """
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    if token_budget < 1:
        raise ValueError("token_budget must be >= 1")
    n = len(lengths)
    if n == 0:
        return []
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lens, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < n:
        longest = int(lens[order[start]])
        size = max(1, min(max_batch, token_budget // max(longest, 1), n - start))
        batches.append(order[start:start + size])
        start += size
    return batches


@dataclass
class Batch:
    """Padded arrays for one model call, and the sequence indices they hold."""

    index: np.ndarray
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray | None = None

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def padded_tokens(self) -> int:
        return int(self.attention_mask.size)


def build_batch(seqs: Seq[Sequence], index: np.ndarray, pad_id: int, second_type_id: int,
                position_offset: int | None = None) -> Batch:
    """Pad the chosen sequences to their longest length (right padding)."""
    width = max(seqs[i].length for i in index)
    b = len(index)
    ids = np.full((b, width), pad_id, dtype=np.int32)
    types = np.zeros((b, width), dtype=np.int32)
    mask = np.zeros((b, width), dtype=np.int32)
    for row, i in enumerate(index):
        s = seqs[i]
        ids[row, :s.length] = np.concatenate(s.parts) if len(s.parts) > 1 else s.parts[0]
        mask[row, :s.length] = 1
        if second_type_id:
            types[row, s.first_len:s.length] = second_type_id
    positions = None
    if position_offset is not None:  # RoBERTa: positions count from padding_idx + 1
        positions = (np.cumsum(mask, axis=1) * mask + position_offset - 1).astype(np.int32)
        positions[mask == 0] = position_offset - 1
    return Batch(index=index, input_ids=ids, token_type_ids=types, attention_mask=mask, position_ids=positions)

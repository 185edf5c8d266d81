"""Bulk tokenization and sequence assembly.

Texts are tokenized once, in bulk, by the Rust fast tokenizer (``encode_batch`` runs in parallel), with
no special tokens and no truncation, so the engine knows every text's true length.  Sequences are then
assembled from token-id arrays with the model's own special-token template (``[CLS] a [SEP] b [SEP]`` for
BERT, ``<s> a </s></s> b </s>`` for RoBERTa), which is what lets a query's tokens be reused across all its
candidates and lets long documents be cut into token windows without tokenizing them again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surerank.errors import InputError

logger = logging.getLogger(__name__)

#: texts per ``encode_batch`` call: bounds the memory held by Encoding objects (offsets, strings)
TOKENIZE_CHUNK = 2048
#: ... or this many characters, whichever comes first (long documents: Encodings cost ~100 bytes a token)
TOKENIZE_CHUNK_CHARS = 1_000_000


@dataclass(frozen=True)
class Template:
    """Special-token ids and type ids around one (single) or two (pair) segments."""

    single_prefix: tuple[int, ...]
    single_suffix: tuple[int, ...]
    pair_prefix: tuple[int, ...]
    pair_middle: tuple[int, ...]
    pair_suffix: tuple[int, ...]
    second_type_id: int

    @property
    def single_specials(self) -> int:
        return len(self.single_prefix) + len(self.single_suffix)

    @property
    def pair_specials(self) -> int:
        return len(self.pair_prefix) + len(self.pair_middle) + len(self.pair_suffix)


class TokenizerEngine:
    """A fast tokenizer that returns id arrays and knows the model's special-token template."""

    def __init__(self, path: Path, lowercase: bool = False):
        from tokenizers import Tokenizer, normalizers

        self.tokenizer = Tokenizer.from_file(str(path))
        if lowercase:  # as sentence-transformers' do_lower_case: a Lowercase before the tokenizer's normaliser
            current = self.tokenizer.normalizer
            self.tokenizer.normalizer = normalizers.Sequence(
                [normalizers.Lowercase(), *([current] if current is not None else [])])
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.template = self._derive_template()
        pad = self.tokenizer.token_to_id("[PAD]")
        if pad is None:
            pad = self.tokenizer.token_to_id("<pad>")
        self.pad_id = int(pad) if pad is not None else 0

    def _derive_template(self) -> Template:
        """Read the template off the tokenizer's post-processor, using two marker segments."""
        tok = self.tokenizer
        a = tok.encode("a", add_special_tokens=False)
        b = tok.encode("b", add_special_tokens=False)
        single = tok.post_process(a, None, add_special_tokens=True)
        pair = tok.post_process(a, b, add_special_tokens=True)
        na, nb = len(a.ids), len(b.ids)
        s_ids = list(single.ids)
        p_ids, p_types = list(pair.ids), list(pair.type_ids)
        i = _find(s_ids, a.ids)
        j = _find(p_ids, a.ids)
        k = _find(p_ids, b.ids, start=j + na)
        return Template(
            single_prefix=tuple(s_ids[:i]), single_suffix=tuple(s_ids[i + na:]),
            pair_prefix=tuple(p_ids[:j]), pair_middle=tuple(p_ids[j + na:k]),
            pair_suffix=tuple(p_ids[k + nb:]), second_type_id=int(p_types[k]),
        )

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids (no special tokens, no truncation) of every text, as int32 arrays."""
        out: list[np.ndarray] = []
        chunk: list[str] = []
        chars = 0
        for text in texts:
            chunk.append(text)
            chars += len(text)
            if len(chunk) >= TOKENIZE_CHUNK or chars >= TOKENIZE_CHUNK_CHARS:
                out.extend(self._encode_chunk(chunk))
                chunk, chars = [], 0
        if chunk:
            out.extend(self._encode_chunk(chunk))
        return out

    def _encode_chunk(self, chunk: list[str]) -> list[np.ndarray]:
        return [np.asarray(enc.ids, dtype=np.int32)
                for enc in self.tokenizer.encode_batch(chunk, add_special_tokens=False)]


def _find(haystack: list[int], needle: list[int], start: int = 0) -> int:
    n = len(needle)
    for i in range(start, len(haystack) - n + 1):
        if haystack[i:i + n] == list(needle):
            return i
    raise InputError("tokenizer: could not read the special-token template from tokenizer.json")


@dataclass
class Sequence:
    """One model input, kept as parts (views into token arrays) until its batch is built."""

    parts: tuple[np.ndarray, ...]
    first_len: int  # tokens of type 0; the rest get the template's second type id
    length: int


def single_sequence(t: Template, ids: np.ndarray) -> Sequence:
    pre = np.asarray(t.single_prefix, np.int32)
    suf = np.asarray(t.single_suffix, np.int32)
    n = len(pre) + len(ids) + len(suf)
    return Sequence((pre, ids, suf), n, n)


def pair_sequence(t: Template, first: np.ndarray, second: np.ndarray) -> Sequence:
    pre = np.asarray(t.pair_prefix, np.int32)
    mid = np.asarray(t.pair_middle, np.int32)
    suf = np.asarray(t.pair_suffix, np.int32)
    first_len = len(pre) + len(first)
    # BERT puts the middle [SEP] in segment A; RoBERTa has one type anyway
    first_len += min(len(mid), 1)
    n = len(pre) + len(first) + len(mid) + len(second) + len(suf)
    return Sequence((pre, first, mid, second, suf), first_len, n)


def windows(length: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Overlapping ``[start, end)`` windows of ``size`` tokens, ``stride`` apart, covering ``length``.

    The last window is aligned to the end so no tail is left out and no window is tiny.
    """
    if size <= 0:
        raise InputError("max_length: no room left for document tokens after the query and special tokens")
    if length <= size:
        return [(0, length)]
    stride = max(1, min(stride, size))
    spans = []
    start = 0
    while True:
        end = start + size
        if end >= length:
            spans.append((max(0, length - size), length))
            break
        spans.append((start, end))
        start += stride
    return spans

"""Engine internals (batch planning, windows, aggregation, templates) and long-document handling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import surerank
from engine_fixtures import cranfield_text
from surerank.engine.batching import build_batch, plan_batches
from surerank.engine.core import Engine, EngineConfig
from surerank.engine.model_files import default_model_dir
from surerank.engine.passages import AGGREGATES, PassagePolicy, aggregate_scores, covered
from surerank.engine.tokenize import Sequence, TokenizerEngine, pair_sequence, single_sequence, windows

lengths_st = st.lists(st.integers(min_value=1, max_value=600), min_size=0, max_size=200)


@given(lengths_st, st.integers(1, 64), st.integers(1, 5000))
def test_plan_batches_covers_every_sequence_once_within_limits(lengths, max_batch, budget):
    plan = plan_batches(lengths, max_batch, budget)
    seen = np.concatenate(plan) if plan else np.array([], dtype=int)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    previous_longest = None
    for batch in plan:
        widths = [lengths[i] for i in batch]
        assert len(batch) <= max_batch
        assert len(batch) == 1 or len(batch) * max(widths) <= budget
        if previous_longest is not None:
            assert max(widths) <= previous_longest  # longest first: an OOM shows up at once
        previous_longest = min(widths)


@given(st.integers(0, 5000), st.integers(1, 512), st.integers(1, 512))
def test_windows_cover_the_document_with_bounded_size(n, size, stride):
    spans = windows(n, size, stride)
    assert all(0 <= a < b <= n or (n == 0 and a == b == 0) for a, b in spans)
    assert all(b - a <= size for a, b in spans)
    assert covered(spans) == n
    assert spans[0][0] == 0 and spans[-1][1] == n


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), max_size=30))
def test_covered_counts_the_union(raw):
    spans = [(min(a, b), max(a, b)) for a, b in raw]
    expected = len({t for a, b in spans for t in range(a, b)})
    assert covered(spans) == expected


@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=40), st.integers(1, 10))
@settings(max_examples=200)
def test_aggregates_are_ordered(scores, k):
    values = np.array(scores)
    mx, mean = aggregate_scores(values, "max"), aggregate_scores(values, "mean")
    topk = aggregate_scores(values, "topk-mean", k)
    assert mx + 1e-9 >= topk >= mean - 1e-9
    assert aggregate_scores(values, "first") == values[0]
    shuffled = values[::-1]
    assert aggregate_scores(shuffled, "max") == mx
    assert np.isclose(aggregate_scores(shuffled, "mean"), mean)
    if k >= len(values):
        assert np.isclose(topk, mean)


def test_policy_reports_what_it_covers():
    spans, report = PassagePolicy(mode="passages", overlap=10, max_passages=3).spans(1000, 100, extra_tokens=5)
    assert len(spans) == 3 and report.passages_scored == 3
    assert report.tokens_used == covered(spans) + 5 and report.truncated
    assert report.tokens_dropped == 1000 - covered(spans)
    _, whole = PassagePolicy(mode="passages").spans(1000, 100)
    assert not whole.truncated and whole.tokens_dropped == 0 and whole.strategy == "passages-max"
    _, cut = PassagePolicy().spans(1000, 100)
    assert cut.truncated and cut.tokens_dropped == 900 and cut.passages_scored == 1


def test_bert_template_and_token_types():
    tok = TokenizerEngine(default_model_dir() / "tokenizer.json")
    t = tok.template
    assert (t.single_prefix, t.single_suffix) == ((101,), (102,))
    assert (t.pair_prefix, t.pair_middle, t.pair_suffix, t.second_type_id) == ((101,), (102,), (102,), 1)
    q, d = tok.encode(["what is lift", "lift is a force"])
    expected = tok.tokenizer.encode("what is lift", "lift is a force")
    seqs: list[Sequence] = [pair_sequence(t, q, d), single_sequence(t, q)]
    batch = build_batch(seqs, np.array([0, 1]), tok.pad_id, t.second_type_id)
    assert batch.input_ids[0].tolist() == expected.ids
    assert batch.token_type_ids[0].tolist() == expected.type_ids
    assert batch.attention_mask[1].tolist() == [1] * 5 + [0] * (len(expected.ids) - 5)


def test_roberta_positions_follow_transformers_convention():
    seqs = [Sequence((np.array([5, 6, 7], np.int32),), 3, 3), Sequence((np.array([5], np.int32),), 1, 1)]
    batch = build_batch(seqs, np.array([0, 1]), pad_id=1, second_type_id=0, position_offset=2)
    # transformers: cumsum(mask) * mask + padding_idx, with padding_idx = 1
    assert batch.position_ids.tolist() == [[2, 3, 4], [2, 1, 1]]


def test_engine_restores_input_order_across_batches():
    engine = Engine(EngineConfig(batch_size=2))
    texts = ["a", "a much longer text about wings and lift", "mid length text", "b", "another one here"]
    ids = engine.tokenizer.encode(texts)
    seqs = [single_sequence(engine.tokenizer.template, x) for x in ids]
    together = engine.run(seqs)
    assert engine.last_stats.batches == 3
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(engine.run([s])[0], together[i], atol=1e-5)
    engine.on_gpu = True  # the GPU path pads the next batch on a background thread; same results
    np.testing.assert_allclose(engine.run(seqs), together, atol=1e-6)


def test_out_of_memory_splits_the_batch():
    """A GPU out-of-memory cannot happen here; a backend that raises it for batches > 2 stands in."""
    engine = Engine(EngineConfig(batch_size=8))
    real = engine.backend

    class TightMemory:
        name, precision, device = "onnx", "fp32", "cpu"

        def run(self, batch):
            if len(batch.index) > 2:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real.run(batch)

        def is_oom(self, exc):
            return "out of memory" in str(exc)

        def empty_cache(self):
            pass

    ids = engine.tokenizer.encode([f"text number {i} " * (i + 1) for i in range(8)])
    seqs = [single_sequence(engine.tokenizer.template, x) for x in ids]
    expected = engine.run(seqs)
    engine.backend = TightMemory()
    got = engine.run(seqs)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert engine.last_stats.oom_retries >= 1 and engine.max_batch <= 2


@pytest.fixture(scope="module")
def long_document_case():
    tok = TokenizerEngine(default_model_dir() / "tokenizer.json")
    filler = cranfield_text(200_000)
    offsets = tok.tokenizer.encode(filler, add_special_tokens=False).offsets
    size = 3100
    # four ~3,100-token documents of unrelated (aeronautics) prose, cut at token boundaries
    texts = [filler[offsets[i * size][0]:offsets[(i + 1) * size][0]] for i in range(4)]
    needle = " Liquid nitrogen boils at minus 196 degrees Celsius at normal atmospheric pressure. "
    cut = offsets[2 * size + int(size * 0.93)][0] - offsets[2 * size][0]  # near the end of document 2
    texts[2] = texts[2][:cut] + needle + texts[2][cut:]
    lengths = [len(x) for x in tok.encode(texts)]
    needle_pos = len(tok.encode([texts[2][:cut]])[0])
    return texts, lengths, needle_pos


def test_relevant_sentence_near_the_end_of_a_long_document(long_document_case):
    texts, lengths, needle_pos = long_document_case
    assert all(n >= 3000 for n in lengths) and needle_pos > 2700
    query = "at what temperature does liquid nitrogen boil"
    passages = surerank.Reranker("embedding", max_length=128, long_documents="passages").rank(query, texts)
    assert passages.ids[0] == "2"
    top = passages.items[0].truncation
    assert top.passages_scored > 20 and not top.truncated and top.strategy == "passages-max"

    truncated = surerank.Reranker("embedding", max_length=128).rank(query, texts)
    item = next(i for i in truncated.items if i.id == "2")
    assert truncated.truncated and item.truncation.truncated and item.truncation.strategy == "truncate"
    assert item.truncation.tokens_dropped == lengths[2] - 126 and item.truncation.passages_scored == 1


@pytest.mark.parametrize("how", AGGREGATES)
def test_every_aggregate_runs_end_to_end(how, long_document_case):
    texts, _, _ = long_document_case
    ranked = surerank.Reranker("embedding", max_length=64, long_documents="passages", aggregate=how,
                               max_passages=4).rank("liquid nitrogen", [t[:3000] for t in texts])
    assert ranked.info["long_documents"] == f"passages-{how}"
    assert all(i.truncation.passages_scored <= 4 for i in ranked.items)

"""Coder-Reviewer: both continuation terms scored through the LLM backend contract, failures never a score."""

from __future__ import annotations

import math

import pytest

from surerank import registry
from surerank.errors import InputError
from surerank.llm.backend import LLMBackend
from surerank.llm.types import LLMRequest, LLMResponse
from surerank.types import Candidate, Query

INSTRUCTION = "def double(x):\n    \"\"\"Return twice x.\"\"\"\n"


class ScriptedScorer(LLMBackend):
    """An in-process backend whose log p(continuation | prefix) is a known function of the two texts: a
    coder that likes short code and a reviewer that likes code mentioning 'x * 2'.  'FAIL' makes the call fail."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__(model="scripted", concurrency=2)
        self.seen: list[tuple[str, str]] = []

    def _generate_one(self, request: LLMRequest) -> LLMResponse:
        raise NotImplementedError

    def _continuation_logprob(self, prefix: str, continuation: str) -> LLMResponse:
        self.seen.append((prefix, continuation))
        if "FAIL" in prefix + continuation:
            raise ConnectionError("scripted failure")
        tokens = len(continuation.split())
        if continuation == INSTRUCTION:  # reviewer term: p(instruction | code)
            logprob = -1.0 * tokens if "x * 2" in prefix else -3.0 * tokens
        else:  # coder term: p(code | instruction)
            logprob = -0.5 * tokens - 0.2 * len(continuation)
        return LLMResponse(info={"logprob": logprob, "tokens": tokens})


def expected(code: str, normalize: bool) -> float:
    tokens_code, tokens_instr = len(code.split()), len(INSTRUCTION.split())
    coder = -0.5 * tokens_code - 0.2 * len(code)
    reviewer = (-1.0 if "x * 2" in code else -3.0) * tokens_instr
    return coder / tokens_code + reviewer / tokens_instr if normalize else coder + reviewer


CODES = ["    return x * 2\n", "    return 0\n", "    y = x + x\n    return y\n"]


@pytest.mark.parametrize("normalize", [True, False])
def test_score_is_coder_plus_reviewer(normalize):
    backend = ScriptedScorer()
    ranker = registry.create("coder-reviewer", backend=backend, normalize=normalize)
    ranked = ranker.rank(Query(INSTRUCTION, [Candidate(str(i), c) for i, c in enumerate(CODES)]))
    for item in ranked:
        assert item.score == pytest.approx(expected(CODES[item.index], normalize))
    assert ranked.cost.calls == 2 * len(CODES)
    assert (INSTRUCTION, CODES[0]) in backend.seen  # the coder term continues the instruction
    assert any(p.startswith(CODES[0]) and c == INSTRUCTION for p, c in backend.seen)
    coder_only = registry.create("coder-reviewer", backend=ScriptedScorer(), mode="coder").rank(
        Query(INSTRUCTION, [Candidate(str(i), c) for i, c in enumerate(CODES)]))
    assert coder_only.cost.calls == len(CODES)


def test_a_failed_term_is_never_a_score(caplog):
    codes = [CODES[1], "    return FAIL\n", CODES[0]]
    ranked = registry.create("coder-reviewer", backend=ScriptedScorer()).rank(
        Query(INSTRUCTION, [Candidate(str(i), c) for i, c in enumerate(codes)]))
    assert ranked.ids[-1] == "1" and ranked.ids[0] == "2"
    assert ranked.info["unscored"] == 1
    assert ranked.info["terms"]["coder"][1] is None
    assert all(math.isfinite(x) for x in ranked.info["terms"]["reviewer"] if x is not None)
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "coder-reviewer" in r.getMessage()]
    assert len(warnings) == 1 and "connection" in warnings[0].getMessage()


def test_options_are_checked():
    with pytest.raises(InputError, match="mode"):
        registry.create("coder-reviewer", backend=ScriptedScorer(), mode="critic")
    with pytest.raises(InputError, match="reviewer_prefix"):
        registry.create("coder-reviewer", backend=ScriptedScorer(), reviewer_prefix="no placeholder")

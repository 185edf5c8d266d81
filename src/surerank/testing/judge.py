"""A deterministic stand-in for an LLM judge, in-process (:class:`JudgeBackend`, the ``"judge"`` backend).

It reads the prompts of :mod:`surerank.llm.prompts` (query line, passage lines, answer format) and answers
from a utility function — word overlap by default, or graded judgments plus controlled noise in the
strategy benchmark — with plausible first-token log-probabilities.  :mod:`surerank.testing.llm_server` serves
the same judge over HTTP.  No model is involved: this exists to test mechanics, not to rank well.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from surerank.llm.backend import LLMBackend
from surerank.llm.types import LLMRequest, LLMResponse

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "how", "in", "is", "it", "of", "on",
    "or", "the", "to", "was", "what", "when", "where", "which", "who", "why", "with", "does", "do", "did",
    "can", "you", "your", "this", "that",
])


def word_overlap(query: str, passage: str) -> float:
    """Share of the query's content words found in the passage (with a small length-normalised tf term)."""
    q = {w for w in _WORD.findall(query.lower()) if w not in _STOP}
    words = _WORD.findall(passage.lower())
    if not q or not words:
        return 0.0
    present = {w for w in words if w in q}
    tf = sum(1 for w in words if w in q) / len(words)
    return len(present) / len(q) + 0.1 * tf


@dataclass
class ParsedPrompt:
    task: str
    query: str
    passages: list[tuple[str, str]]
    max_grade: int = 0


_LABELLED = re.compile(r"^\[([A-Za-z0-9]+)\] (.*)$", re.M)
_PAIR = re.compile(r"^Passage ([AB]): (.*)$", re.M)
_SINGLE = re.compile(r"^Passage: (.*)$", re.M)
_QUERY = re.compile(r"^Query: (.*)$", re.M)
_GRADE = re.compile(r"scale from 0 to (\d+)")


def parse_prompt(text: str) -> ParsedPrompt:
    query_match = _QUERY.search(text)
    query = query_match.group(1) if query_match else ""
    if "Please write a question based on this passage" in text:
        passage = _SINGLE.search(text)
        question = text.split("Question:", 1)[1].strip() if "Question:" in text else ""
        return ParsedPrompt("qlik", question, [("", passage.group(1) if passage else "")])
    if "Answer A or B" in text:
        return ParsedPrompt("pair", query, _PAIR.findall(text))
    if "Answer Yes or No" in text:
        passage = _SINGLE.search(text)
        return ParsedPrompt("yesno", query, [("", passage.group(1) if passage else "")])
    grade = _GRADE.search(text)
    if grade:
        passage = _SINGLE.search(text)
        return ParsedPrompt("grade", query, [("", passage.group(1) if passage else "")], int(grade.group(1)))
    if "most relevant to the query? Answer with its identifier" in text:
        return ParsedPrompt("choice", query, _LABELLED.findall(text))
    return ParsedPrompt("permutation", query, _LABELLED.findall(text))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max()
    return x - math.log(float(np.exp(x).sum()))


class Judge:
    """Answers prompts from ``utility(query, passage)``, with optional Gaussian noise and position bias.

    Noise is drawn from a generator seeded by the prompt text, so the same prompt gets the same answer
    (like a temperature-0 model) while different prompts see independent noise.  ``scale`` turns utility
    differences into logits for the log-probabilities it reports.
    """

    def __init__(self, utility: Callable[[str, str], float] = word_overlap, noise: float = 0.0,
                 position_bias: float = 0.0, scale: float = 4.0, threshold: float = 0.5,
                 seed: int = 0) -> None:
        self.utility = utility
        self.noise = noise
        self.position_bias = position_bias
        self.scale = scale
        self.threshold = threshold
        self.seed = seed

    def _values(self, prompt: ParsedPrompt, text: str) -> np.ndarray:
        values = np.array([self.utility(prompt.query, passage) for _, passage in prompt.passages], dtype=float)
        if self.noise > 0 and values.size:
            digest = hashlib.sha256(f"{self.seed}:{text}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            values = values + rng.normal(0.0, self.noise, size=values.size)
        if self.position_bias and values.size > 1:
            values = values - self.position_bias * np.arange(values.size) / (values.size - 1)
        return values

    def answer(self, request: LLMRequest) -> tuple[str, dict[str, float]]:
        """The answer text and first-token log-probabilities (keyed by the answer's first token)."""
        text = request.text()
        prompt = parse_prompt(text)
        values = self._values(prompt, text)
        if prompt.task == "qlik" or not prompt.passages:
            return "", {}
        if prompt.task == "yesno":
            logit = self.scale * (values[0] - self.threshold)
            lp_yes = -math.log1p(math.exp(-logit)) if logit > -30 else logit
            lp_no = -math.log1p(math.exp(logit)) if logit < 30 else -logit
            return ("Yes" if logit > 0 else "No"), {"Yes": lp_yes, "No": lp_no}
        if prompt.task == "grade":
            grades = np.arange(prompt.max_grade + 1, dtype=float)
            target = float(np.clip(values[0] * prompt.max_grade, 0, prompt.max_grade))
            lp = _log_softmax(-self.scale * (grades - target) ** 2)
            return str(int(np.argmax(lp))), {str(int(g)): float(v) for g, v in zip(grades, lp)}
        labels = [label for label, _ in prompt.passages]
        lp = _log_softmax(self.scale * values)
        logprobs = {label: float(v) for label, v in zip(labels, lp)}
        best = int(np.argmax(values))
        if prompt.task == "pair":
            return labels[best], logprobs
        if prompt.task == "choice":
            return labels[best], logprobs
        order = np.argsort(-values, kind="stable")
        return " > ".join(f"[{labels[i]}]" for i in order), logprobs

    def continuation_logprob(self, prefix: str, continuation: str) -> float:
        prompt = parse_prompt(prefix + continuation)
        values = self._values(prompt, prefix + continuation)
        return float(self.scale * (values[0] - 1.0)) if values.size else -10.0


class JudgeBackend(LLMBackend):
    """The judge in-process: the same prompts, parsing and accounting as a real model, no transport."""

    name = "judge"

    def __init__(self, judge: Judge | None = None, concurrency: int = 1, **kwargs: Any) -> None:
        super().__init__(model="stand-in-judge", concurrency=concurrency, **kwargs)
        self.judge = judge or Judge()

    def _generate_one(self, request: LLMRequest) -> LLMResponse:
        text, logprobs = self.judge.answer(request)
        response = LLMResponse(text=text, raw_text=text, prompt_tokens=request.estimated_prompt_tokens(),
                               completion_tokens=max(1, len(text) // 3))
        if request.top_logprobs or request.labels:
            first = {k: v for k, v in logprobs.items() if not request.labels or k in request.labels}
            response.first_token_logprobs = first
        return response

    def _continuation_logprob(self, prefix: str, continuation: str) -> LLMResponse:
        return LLMResponse(prompt_tokens=LLMRequest(prompt=prefix + continuation).estimated_prompt_tokens(),
                           info={"logprob": self.judge.continuation_logprob(prefix, continuation),
                                 "tokens": len(continuation.split())})

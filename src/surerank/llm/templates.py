"""Named templates of LLM rerankers: each model's own prompt and its published scoring formula, in ONE table.

An LLM reranker such as Qwen3-Reranker was trained on one exact prompt and is scored by one exact formula over
the logits of the next token; a generic "Answer Yes or No" prompt ranks differently (Kendall tau 0.14 against
Qwen3-Reranker's formula, issue 13).  The template is chosen by name (``template="qwen3-reranker"``), never
guessed from the model name: a wrong guess would score silently with the wrong formula.

Each template gives the prompt as *pieces*, tokenized separately and concatenated, exactly as the reference
code builds its token ids (``prefix + body + suffix``); backends that take text (HTTP servers) get the pieces
joined.  Scores:

* ``p_first``: P(label 0) under a softmax over the two label tokens' logits (Qwen3-Reranker: P("yes")).
* ``logit_first``: the raw logit of label 0 (bge-reranker-v2-gemma: the "Yes" logit); needs the full logits,
  which an OpenAI-compatible completion API does not return (its log-probabilities are normalised).
* ``logit_diff``: logit(label 0) - logit(label 1) (mxbai-rerank-v2: "1" minus "0").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from surerank.errors import InputError
from surerank.llm.types import LLMRequest

FORMULAS = ("p_first", "logit_first", "logit_diff")


@dataclass(frozen=True)
class RerankTemplate:
    """One reranker family's prompt and formula.

    ``pieces(query, document, instruction)``: the prompt as separately tokenized pieces (no special tokens
    added except a BOS when ``add_bos``).  ``pair(...)``: (query side, document side) text for servers whose
    score/rerank endpoint joins the two itself.  ``labels``: the next-token labels of the formula;
    ``label_lookup``: ``vocab`` (the vocabulary entry spelled exactly so, ``convert_tokens_to_ids``) or
    ``encode`` (the first token of encoding the label without special tokens).
    """

    name: str
    models: str
    pieces_fn: Callable[[str, str, str], tuple[str, ...]]
    pair_fn: Callable[[str, str, str], tuple[str, str]]
    labels: tuple[str, ...]
    label_lookup: str
    formula: str
    add_bos: bool = False
    default_instruction: str = ""
    reference: str = ""

    def instruction_or_default(self, instruction: str | None) -> str:
        return self.default_instruction if instruction is None else instruction

    def pieces(self, query: str, document: str, instruction: str | None = None) -> tuple[str, ...]:
        return self.pieces_fn(query, document, self.instruction_or_default(instruction))

    def prompt(self, query: str, document: str, instruction: str | None = None) -> str:
        """The pieces joined: the raw completion prompt (a server adds its own BOS where the model wants one)."""
        return "".join(self.pieces(query, document, instruction))

    def pair(self, query: str, document: str, instruction: str | None = None) -> tuple[str, str]:
        return self.pair_fn(query, document, self.instruction_or_default(instruction))

    @property
    def needs_raw_logits(self) -> bool:
        """True when the formula cannot be computed from normalised log-probabilities."""
        return self.formula == "logit_first"

    def score(self, values: Mapping[str, float], normalised: bool = False) -> float:
        """The published score from the labels' next-token logits (``normalised=False``) or log-probabilities
        (``normalised=True``: both differ by one constant per prompt, which ``p_first``/``logit_diff`` cancel)."""
        missing = [label for label in self.labels if label not in values]
        if missing:
            raise KeyError(f"template {self.name}: no value for label(s) {missing}")
        first = float(values[self.labels[0]])
        if self.formula == "logit_first":
            if normalised:
                raise InputError(f"template {self.name}: the score is the raw {self.labels[0]!r} logit, which "
                                 "normalised log-probabilities do not give")
            return first
        second = float(values[self.labels[1]])
        if self.formula == "logit_diff":
            return first - second
        d = first - second  # p_first: softmax over (first, second) = sigmoid(first - second)
        return 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))


# --- Qwen3-Reranker (Qwen/Qwen3-Reranker-0.6B / 4B / 8B model card) ---------------------------------------
_QWEN3_PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
                 "the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n"
                 "<|im_start|>user\n")
_QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def _qwen3_pieces(query: str, document: str, instruction: str) -> tuple[str, ...]:
    body = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
    return (_QWEN3_PREFIX, body, _QWEN3_SUFFIX)


def _qwen3_pair(query: str, document: str, instruction: str) -> tuple[str, str]:
    return (f"{_QWEN3_PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n",
            f"<Document>: {document}{_QWEN3_SUFFIX}")


# --- bge-reranker-v2-gemma (BAAI/bge-reranker-v2-gemma model card, FlagEmbedding's FlagLLMReranker) --------
_GEMMA_PROMPT = ("Given a query A and a passage B, determine whether the passage contains an answer to the query "
                 "by providing a prediction of either 'Yes' or 'No'.")


def _gemma_pieces(query: str, document: str, instruction: str) -> tuple[str, ...]:
    return (f"A: {query}", "\n", f"B: {document}", "\n", instruction)


def _gemma_pair(query: str, document: str, instruction: str) -> tuple[str, str]:
    return (f"A: {query}", f"\nB: {document}\n{instruction}")


# --- mxbai-rerank-v2 (mixedbread-ai/mxbai-rerank-base-v2 / large-v2; the mxbai-rerank package) --------------
_MXBAI_PREFIX = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                 "<|im_end|>\n<|im_start|>user\n")
_MXBAI_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
_MXBAI_TASK = ("You are a search relevance expert who evaluates how well documents match search queries. For each "
               "query-document pair, carefully analyze the semantic relationship between them, then provide your "
               "binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:")


def _mxbai_query(query: str, instruction: str) -> str:
    return f"instruction: {instruction}\nquery: {query}" if instruction else f"query: {query}"


def _mxbai_pieces(query: str, document: str, instruction: str) -> tuple[str, ...]:
    return (_MXBAI_PREFIX, _mxbai_query(query, instruction), "\n", f"document: {document}", "\n", _MXBAI_TASK,
            _MXBAI_SUFFIX)


def _mxbai_pair(query: str, document: str, instruction: str) -> tuple[str, str]:
    return (_MXBAI_PREFIX + _mxbai_query(query, instruction), f"\ndocument: {document}\n{_MXBAI_TASK}{_MXBAI_SUFFIX}")


TEMPLATES: dict[str, RerankTemplate] = {
    t.name: t
    for t in [
        RerankTemplate(
            "qwen3-reranker", "Qwen/Qwen3-Reranker-0.6B, -4B, -8B (and fine-tunes that keep the template)",
            _qwen3_pieces, _qwen3_pair, labels=("yes", "no"), label_lookup="vocab", formula="p_first",
            default_instruction="Given a web search query, retrieve relevant passages that answer the query",
            reference="system prompt + '<Instruct>: …\\n<Query>: …\\n<Document>: …' + assistant turn with an empty "
                      "think block; score = P('yes') under softmax over the 'yes'/'no' next-token logits"),
        RerankTemplate(
            "bge-reranker-v2-gemma", "BAAI/bge-reranker-v2-gemma", _gemma_pieces, _gemma_pair,
            labels=("Yes",), label_lookup="encode", formula="logit_first", add_bos=True,
            default_instruction=_GEMMA_PROMPT,
            reference="<bos> 'A: {query}' '\\n' 'B: {passage}' '\\n' prompt; score = the next-token 'Yes' logit"),
        RerankTemplate(
            "mxbai-rerank-v2", "mixedbread-ai/mxbai-rerank-base-v2, -large-v2", _mxbai_pieces, _mxbai_pair,
            labels=("1", "0"), label_lookup="encode", formula="logit_diff",
            reference="Qwen chat prefix + '[instruction: …\\n]query: …' '\\n' 'document: …' '\\n' task prompt "
                      "ending 'Relevance:' + assistant turn; score = logit('1') - logit('0')"),
    ]
}


def get_template(name: str) -> RerankTemplate:
    """The template called ``name``; an unknown name is refused with the list of known ones."""
    if not isinstance(name, str) or name not in TEMPLATES:
        raise InputError(f"template: {name!r} is not a known reranker template; choose one of "
                         f"{', '.join(sorted(TEMPLATES))} (or leave it unset for the generic yes/no prompt)")
    return TEMPLATES[name]


def label_values(top: Mapping[str, float] | None, labels: tuple[str, ...]) -> dict[str, float]:
    """The labels' log-probabilities from a server's ``top_logprobs`` map, by exact token text (a template's
    labels are exact tokens: Qwen3's 'yes' is not ' yes' or 'Yes'); non-finite values are left out."""
    if not top:
        return {}
    return {label: float(top[label]) for label in labels
            if label in top and top[label] is not None and math.isfinite(float(top[label]))}


def template_request(template: RerankTemplate, query: str, document: str,
                     instruction: str | None = None) -> LLMRequest:
    """The backend request scoring one (query, document) pair with ``template``: the prompt as pieces, the
    joined prompt (for estimates and text backends), one next token with its log-probabilities."""
    pieces = template.pieces(query, document, instruction)
    return LLMRequest(prompt="".join(pieces), pieces=pieces, template=template.name, labels=template.labels,
                      max_tokens=1, top_logprobs=20)

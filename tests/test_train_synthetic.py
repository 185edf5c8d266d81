"""Synthetic queries (issue 24, "queries it does not have"): the real OpenAI-compatible client against the stand-in
server on loopback, whose judge here writes a query from the passage it is shown (a subclass in this file)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from surerank import Reranker
from surerank.errors import InputError
from surerank.formats import read_qrels, read_rankgpt_json
from surerank.llm import LLMRequest
from surerank.llm.openai import OpenAICompatibleBackend
from surerank.testing.judge import Judge
from surerank.testing.llm_server import StandInServer
from surerank.train.synthetic import (
    DEFAULT_EXAMPLES,
    PROMPTS,
    SynthesisConfig,
    SynthesisResult,
    asked_passage,
    build_requests,
    parse_query,
    synthesise,
)
from surerank.types import Candidate

# every passage but d0 says "wind tunnel" twice: a query of just those words does not bring d0 back first
CORPUS = [
    Candidate("d0", "Panel flutter of thin cylindrical shells in supersonic flow, measured in a wind tunnel."),
    Candidate("d1", "Heat transfer to a blunt body at hypersonic speed, from wind tunnel tests and wind tunnel "
                    "calibration."),
    Candidate("d2", "Boundary layer transition on a flat plate with suction; wind tunnel data from the wind tunnel."),
    Candidate("d3", "Buckling of stiffened panels under axial compression: wind tunnel results and wind tunnel model."),
    Candidate("d4", "Ablation of a heat shield during atmospheric entry, with wind tunnel checks in a wind tunnel."),
    Candidate("d5", "Sonic boom propagation through a stratified atmosphere, wind tunnel and wind tunnel flights."),
    Candidate("d6", ""),
]
RARE = {"d0": "panel flutter cylindrical shells", "d1": "blunt body hypersonic heat transfer",
        "d2": "boundary layer transition suction", "d3": "buckling stiffened panels compression",
        "d4": "heat shield ablation atmospheric entry", "d5": "sonic boom stratified atmosphere"}


class QueryWriter(Judge):
    """Answers a query-writing prompt with ``write(passage id)`` for the passage it asks about."""

    def __init__(self, write: Callable[[str], str]) -> None:
        super().__init__()
        self.write = write
        self.by_text = {c.text: c.id for c in CORPUS}

    def answer(self, request: LLMRequest) -> tuple[str, dict[str, float]]:
        return self.write(self.by_text[asked_passage(request)]), {}


def rare(pid: str) -> str:
    return f'1. Query: "{RARE[pid]}"\n\nExample 5:\nDocument: something else'


@pytest.fixture
def server():
    with StandInServer(judge=QueryWriter(rare)) as s:
        yield s


def client(server: StandInServer, **options) -> OpenAICompatibleBackend:
    settings = {"timeout": 5.0, "max_retries": 3, "backoff": 0.01, "concurrency": 2, **options}
    return OpenAICompatibleBackend(model="stand-in-judge", base_url=server.base_url, **settings)


def test_queries_come_back_parsed_filtered_and_load_as_training_lists(server, tmp_path):
    result = synthesise(CORPUS, tmp_path / "out", client(server), SynthesisConfig(k=1, depth=5))
    assert result.counts == {"passages": 7, "passages_asked": 6, "skipped_empty": 1, "asked": 6, "not_asked": 0,
                             "answered": 6, "parsed": 6, "kept": 6}
    assert server.requests == 6
    assert result.dropped == {} and result.complete
    assert result.cost.calls == 6 and result.cost.cache_hits == 0 and result.cost.retries == 0
    lists = read_rankgpt_json(result.files["lists"])
    assert {q.text for q in lists} == set(RARE.values())
    assert all(1 <= len(q.candidates) <= 5 for q in lists)
    qrels = read_qrels(result.files["qrels"])
    assert {qid: list(docs) for qid, docs in qrels.items()} == {q.id: [q.id.split("-")[1]] for q in lists}
    ranked = Reranker("bm25").rank_many(lists)
    assert all(r.ids[0] == q.id.split("-")[1] for r, q in zip(ranked, lists))  # the source comes first
    again = SynthesisResult.load(result.files["summary"])
    assert again.to_dict() == json.loads(json.dumps(result.to_dict()))
    assert again.prompt == {"name": "inpars-chat", "version": 1, "examples": "default"}


def test_round_trip_keeps_a_rare_word_query_and_drops_a_generic_one(tmp_path):
    write = {"d0": "wind tunnel", "d1": "blunt body hypersonic heat transfer",
             "d2": "lorem ipsum dolor"}
    with StandInServer(judge=QueryWriter(lambda pid: write.get(pid, RARE[pid]))) as s:
        result = synthesise(CORPUS, tmp_path, client(s), SynthesisConfig(k=2, depth=6))
    assert result.counts["kept"] == 4 and result.dropped == {"no_match": 1, "not_in_top_k": 1}
    kept = {q.text for q in read_rankgpt_json(result.files["lists"])}
    assert "blunt body hypersonic heat transfer" in kept and "wind tunnel" not in kept
    records = [json.loads(line) for line in Path(result.files["dropped"]).read_text().splitlines()]
    generic = next(r for r in records if r["passage"] == "d0")
    assert generic["reason"] == "not_in_top_k" and generic["source_rank"] == 6  # the one "wind tunnel" of the six
    assert next(r for r in records if r["passage"] == "d2")["reason"] == "no_match"


def test_a_filter_ranker_reranks_the_first_stage(server, tmp_path):
    result = synthesise(CORPUS, tmp_path, client(server), SynthesisConfig(k=1, depth=5, filter="bm25"))
    assert result.counts["kept"] == 6 and result.filter["ranker"]["ranker"] == "bm25"


def test_a_killed_run_asks_again_only_for_the_passages_it_had_not_answered(server, tmp_path):
    config = SynthesisConfig(group=2, queries_per_passage=2, k=1, depth=5)

    def kill(progress):
        if progress.asked >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesise(CORPUS, tmp_path / "run", client(server), config, progress=kill)
    assert server.requests == 4  # two passages, two queries each
    result = synthesise(CORPUS, tmp_path / "run", client(server), config)
    assert server.requests == 12  # only the four passages left
    assert result.cost.cache_hits == 4 and result.cost.calls == 8 and result.counts["asked"] == 12
    # the second query of a passage, with other examples, is the same text here: dropped as a duplicate, counted
    assert result.counts["kept"] == 6 and result.dropped == {"duplicate": 6}
    assert result.cache["entries"] == 12
    clean = synthesise(CORPUS, tmp_path / "clean", client(server), config)
    assert Path(clean.files["lists"]).read_text() == Path(result.files["lists"]).read_text()


def test_server_faults_are_retried_or_counted_never_silent(server, tmp_path):
    server.faults = ["500", "503", "garbage"]
    result = synthesise(CORPUS[:3], tmp_path / "a", client(server), SynthesisConfig(k=1, depth=3))
    assert result.cost.retries == 2 and result.cost.details["retry_causes"] == {"http_500": 1, "http_503": 1}
    # the garbage answer parses as words, and the round trip drops it
    assert result.counts["answered"] == 3 and result.counts["kept"] == 2 and result.dropped == {"no_match": 1}
    server.faults = ["500"]
    result = synthesise(CORPUS[:3], tmp_path / "b", client(server, max_retries=0), SynthesisConfig(k=1, depth=3))
    assert result.dropped == {"failed_call": 1} and result.cost.details["failures"] == {"http_500": 1}
    assert result.counts["asked"] == 3 and result.counts["answered"] == 2
    before = server.requests
    rerun = synthesise(CORPUS[:3], tmp_path / "b", client(server, max_retries=0), SynthesisConfig(k=1, depth=3))
    # a failed call is not cached: the rerun asks for it alone
    assert server.requests - before == 1 and rerun.cost.cache_hits == 2 and rerun.counts["kept"] == 3


def test_an_answer_that_repeats_a_prompt_example_is_an_echo(tmp_path):
    copy = "Vitamin D is produced in the skin when it is exposed."  # the example's passage, copied
    with StandInServer(judge=QueryWriter(lambda pid: "How does the body make vitamin D?" if pid < "d3" else copy)) as s:
        result = synthesise(CORPUS, tmp_path, client(s), SynthesisConfig(examples=[DEFAULT_EXAMPLES[1]], k=1))
    assert result.dropped == {"echo": 6} and result.counts["kept"] == 0
    assert SynthesisResult.load(result.files["summary"]).prompt["examples"] == "given"


def test_zero_shot_prompts_show_the_instruction_and_the_passage_only():
    asked = build_requests(CORPUS, [0], SynthesisConfig(shots=0, prompt="inpars-vanilla"))
    prompt = asked[0].request.text()
    assert prompt.startswith("Write a short search query") and prompt.count("Document:") == 1
    assert prompt.endswith(f"Document: {CORPUS[0].text}\nRelevant query:")
    chat = build_requests(CORPUS, [0], SynthesisConfig(shots=0))[0].request.messages
    assert chat == (("system", PROMPTS["inpars-chat"].instruction), ("user", CORPUS[0].text))


def test_the_chat_prompt_shows_each_example_as_a_user_and_an_assistant_turn():
    """A small chat model shown the examples as text in one message writes them out again (docs/synthetic.md):
    the chat prompt makes each one a turn, the passage the last user turn, for the model's chat template."""
    asked = build_requests(CORPUS, [1], SynthesisConfig(shots=3))[0]
    roles = [role for role, _ in asked.request.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    shown = [(asked.request.messages[i][1], asked.request.messages[i + 1][1]) for i in (1, 3, 5)]
    assert shown == [(e.passage, e.query) for e in asked.examples]
    assert set(asked.examples) <= set(DEFAULT_EXAMPLES) and asked.request.messages[-1] == ("user", CORPUS[1].text)
    assert asked_passage(asked.request) == CORPUS[1].text


def test_a_call_budget_stops_the_run_and_says_so(server, tmp_path):
    result = synthesise(CORPUS, tmp_path, client(server), SynthesisConfig(group=1, max_calls=3, k=1, depth=5))
    assert (result.counts["asked"], result.counts["not_asked"], result.complete) == (3, 3, False)
    assert server.requests == 3


def test_the_same_seed_picks_the_same_passages_and_prompts(server, tmp_path):
    runs = [synthesise(CORPUS, tmp_path / str(i), client(server), SynthesisConfig(passages=3, seed=seed, k=1, depth=5))
            for i, seed in enumerate((7, 7, 8))]
    texts = [Path(r.files["lists"]).read_text() for r in runs]
    assert texts[0] == texts[1] and runs[0].counts["passages_asked"] == 3
    prompts = [json.dumps(b["messages"]) for b in server.bodies]
    assert sorted(prompts[:3]) == sorted(prompts[3:6])
    assert texts[2] != texts[0]


@pytest.mark.parametrize(("answer", "expected"), [
    ('Here is a relevant query:\n"panel flutter of shells"', ("panel flutter of shells", None)),
    ("<think>a query about flutter</think>Relevant query: panel flutter Document: more", ("panel flutter", None)),
    ("2) query: shell buckling\nanother line", ("shell buckling", None)),
    ("", (None, "empty")),
    ("Document: The Great Barrier Reef is large.\nRelevant query: reef", (None, "echo")),
    ("Query:", (None, "empty")),
    ("flutter", (None, "too_short")),
    (" ".join(["word"] * 40), (None, "too_long")),
    ("thin cylindrical shells in supersonic flow, measured", (None, "copied")),
])
def test_answers_are_parsed_and_cleaned(answer, expected):
    assert parse_query(answer, CORPUS[0].text, SynthesisConfig()) == expected


def test_bad_settings_and_documents_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="prompt"):
        SynthesisConfig(prompt="nope")
    with pytest.raises(InputError, match="queries_per_passage"):
        SynthesisConfig(queries_per_passage=0)
    with pytest.raises(InputError, match="shots"):
        SynthesisConfig(shots=-1)
    with pytest.raises(InputError, match="kind"):
        SynthesisResult.from_dict({"kind": "surerank.eval", "version": 1})


def test_the_command_line_writes_the_lists_and_a_rerun_asks_nothing(server, tmp_path, capsys):
    """``surerank train --synthesise`` end to end: a JSONL corpus, the real HTTP client, the folder it writes;
    run again, every answer comes from the cache."""
    from surerank.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": c.id, "text": c.text}) + "\n" for c in CORPUS))
    argv = ["train", "--synthesise", str(corpus), "--llm", "openai", "-o", f"base_url={server.base_url}",
            "-o", "model=stand-in-judge", "-o", "backoff=0.01", "--round-trip-k", "1", "--round-trip-depth", "5",
            "--output", str(tmp_path / "out")]
    assert main(argv) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["complete"] and said["counts"]["kept"] == 6 and server.requests == 6
    assert {q.text for q in read_rankgpt_json(said["files"]["lists"])} == set(RARE.values())
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["counts"] == said["counts"] and server.requests == 6  # nothing asked twice

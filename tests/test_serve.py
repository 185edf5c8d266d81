"""The rerank service over real HTTP: a `surerank serve` subprocess on loopback, called by the official
Cohere SDK, raw Jina- and TEI-shaped requests, the surerank client, and the LangChain / LlamaIndex adapters.
Expected answers come from the same ranker run in-process."""

from __future__ import annotations

import asyncio
import math
import signal

import httpx
import pytest

from serve_support import Server, lexical_ranker, make_ranker, metric

KEY = "test-key-123"
RANKER = lexical_ranker()

QUERY = "how do solar panels convert sunlight into electricity"
DOCS = [
    "Bananas are rich in potassium and easy to digest.",
    "Solar panels use photovoltaic cells that convert sunlight into electricity.",
    "The electricity grid balances supply and demand every second.",
    "Sunlight reaching the earth varies with latitude and season.",
    "Panels of judges convert raw scores into rankings.",
    "Photovoltaic solar panels turn sunlight directly into electric current.",
    "A short note on nothing in particular.",
]


@pytest.fixture(scope="module")
def server():
    # chunky / trunc: word-window rankers through surerank's passage machinery (max_chunks_per_doc)
    srv = Server("--model", f"lex={RANKER}", "--model", "chunky=serve_support:PassageOverlapRanker",
                 "--model", "trunc=serve_support:PassageOverlapRanker", "--option", "trunc.long_documents=truncate",
                 "--max-documents", "20", "--max-document-tokens", "40",
                 "--max-wait-ms", "2", env={"SURERANK_API_KEYS": KEY, "SURERANK_MAX_BODY_BYTES": "20000"})
    yield srv
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -SIGTERM is a clean exit here
    assert srv.stop() in (0, -signal.SIGTERM), srv.output()
    assert "Application shutdown complete" in srv.output()


@pytest.fixture(scope="module")
def expected():
    ranked = make_ranker(RANKER).rank(QUERY, DOCS)
    return ranked


def post(server, path, body, key=KEY):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30)


def test_cohere_sdk_v2_reranks_unchanged(server, expected):
    import cohere

    client = cohere.ClientV2(api_key=KEY, base_url=server.url)
    response = client.rerank(model="lex", query=QUERY, documents=DOCS, top_n=3)
    assert [r.index for r in response.results] == [item.index for item in expected.items[:3]]
    for got, want in zip(response.results, expected.items, strict=False):
        assert got.relevance_score == pytest.approx(want.score, rel=1e-6)
    assert response.id and response.meta.billed_units.search_units == 1


def test_jina_shape_mixed_documents(server, expected):
    documents = [d if i % 2 else {"text": d, "source": f"s{i}"} for i, d in enumerate(DOCS)]
    response = post(server, "/v1/rerank", {"model": "lex", "query": QUERY, "documents": documents,
                                           "top_n": 4, "return_documents": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "lex" and body["usage"]["total_tokens"] > 0
    assert [r["index"] for r in body["results"]] == [item.index for item in expected.items[:4]]
    for result in body["results"]:
        assert result["document"]["text"] == DOCS[result["index"]]
        if result["index"] % 2 == 0:
            assert result["document"]["source"] == f"s{result['index']}"


def test_tei_shape(server, expected):
    raw = post(server, "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True})
    assert raw.status_code == 200, raw.text
    ranks = raw.json()
    assert [r["index"] for r in ranks] == [item.index for item in expected.items]
    assert all(r["text"] == DOCS[r["index"]] for r in ranks)
    assert [r["score"] for r in ranks] == pytest.approx(expected.scores, rel=1e-6)
    squashed = post(server, "/rerank", {"query": QUERY, "texts": DOCS}).json()
    assert "text" not in squashed[0]
    assert [r["score"] for r in squashed] == pytest.approx([1 / (1 + math.exp(-s)) for s in expected.scores])


def test_api_keys(server):
    body = {"query": QUERY, "documents": DOCS[:2]}
    assert post(server, "/v2/rerank", body, key=None).status_code == 401
    wrong = post(server, "/v2/rerank", body, key="not-the-key")
    assert wrong.status_code == 401 and "API key" in wrong.json()["message"]
    assert post(server, "/v2/rerank", body).status_code == 200
    assert httpx.get(f"{server.url}/v1/models", timeout=10).status_code == 401
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200  # probes need no key


def test_limits_and_bad_input_name_the_field(server):
    too_many = post(server, "/v2/rerank", {"query": "q", "documents": ["d"] * 21})
    assert too_many.status_code == 413 and "max_documents=20" in too_many.json()["message"]
    long_doc = " ".join(["word"] * 60)
    too_long = post(server, "/v2/rerank", {"query": "q", "documents": ["short", long_doc]})
    assert too_long.status_code == 413
    message = too_long.json()["message"]
    assert "documents[1]" in message and "max_document_tokens=40" in message
    tei_long = post(server, "/rerank", {"query": "q", "texts": [long_doc]})
    assert tei_long.status_code == 413 and "truncate=true" in tei_long.json()["message"]
    cases = {
        "top_n": {"query": "q", "documents": ["a"], "top_n": 0},
        "documents[1]": {"query": "q", "documents": ["a", 5]},
        "query": {"documents": ["a"]},
        "colour": {"query": "q", "documents": ["a"], "colour": "red"},
        "max_tokens_per_doc": {"query": "q", "documents": ["a"], "max_tokens_per_doc": -1},
    }
    for field, body in cases.items():
        response = post(server, "/v2/rerank", body)
        assert response.status_code == 422, (field, response.text)
        assert field in response.json()["message"], (field, response.text)
    broken = httpx.post(f"{server.url}/v2/rerank", content=b"{not json", timeout=10,
                        headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"})
    assert broken.status_code == 422
    unknown = post(server, "/v2/rerank", {"model": "nope", "query": "q", "documents": ["a"]})
    assert unknown.status_code == 404 and "lex" in unknown.json()["message"]


def test_body_size_limit_with_and_without_content_length(server):
    body = ('{"query": "q", "documents": ["' + "x" * 30000 + '"]}').encode()
    headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    declared = httpx.post(f"{server.url}/v2/rerank", content=body, headers=headers, timeout=30)
    chunked = httpx.post(f"{server.url}/v2/rerank", content=iter([body[:100], body[100:]]), headers=headers,
                         timeout=30)
    for response in (declared, chunked):
        assert response.status_code == 413 and "max_body_bytes=20000" in response.json()["message"]
    small = b'{"query": "solar", "documents": ["solar panels"]}'
    assert httpx.post(f"{server.url}/v2/rerank", content=iter([small[:5], small[5:]]), headers=headers,
                      timeout=30).status_code == 200


def test_requested_truncation_is_reported(server):
    long_doc = "solar " * 30 + "panels " * 30
    response = post(server, "/v2/rerank", {"query": "solar panels", "documents": [long_doc, "solar"],
                                           "max_tokens_per_doc": 30})
    assert response.status_code == 200, response.text
    body = response.json()
    assert any("max_tokens_per_doc" not in w and "30" in w for w in body["meta"]["warnings"])
    by_index = {r["index"]: r for r in body["results"]}
    assert by_index[0].get("truncated") is True and "truncated" not in by_index[1]
    assert body["surerank"]["truncated_documents"] == [0]
    assert response.headers["x-surerank-truncated-documents"] == "0"
    # what was scored is the cut text: the same as ranking the first 30 tokens in-process
    cut = make_ranker(RANKER).rank("solar panels", ["solar " * 30, "solar"])
    cut_score = next(item.score for item in cut.items if item.index == 0)
    assert by_index[0]["relevance_score"] == pytest.approx(cut_score)


def test_extras(server, expected):
    needs_calibration = post(server, "/v2/rerank", {"query": QUERY, "documents": DOCS,
                                                    "surerank": {"probability": True}})
    assert needs_calibration.status_code == 422
    assert "surerank.probability" in needs_calibration.json()["message"]
    response = post(server, "/v2/rerank", {"query": QUERY, "documents": DOCS,
                                           "surerank": {"cutoff": "gap", "raw_scores": True}})
    assert response.status_code == 200, response.text
    body = response.json()
    from surerank.trust import AdaptiveCutoff

    AdaptiveCutoff(method="gap").apply([expected])
    assert [r["keep"] for r in body["results"]] == [item.keep for item in expected.items]
    assert body["surerank"]["cutoff"]["kept"] == sum(item.keep for item in expected.items)
    bad = post(server, "/v2/rerank", {"query": "q", "documents": ["a"], "surerank": {"cutoff": "magic"}})
    assert bad.status_code == 422 and "surerank.cutoff" in bad.json()["message"]


def test_models_health_metrics(server):
    models = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert models.json()["data"][0]["id"] == "lex" and models.json()["data"][0]["default"] is True
    assert [m["id"] for m in models.json()["data"]] == ["lex", "chunky", "trunc"]
    assert httpx.get(f"{server.url}/ready", timeout=10).json() == {"status": "ready"}
    assert metric(server.url, "surerank_http_requests_total", path="/v2/rerank", status="200") >= 1
    assert metric(server.url, "surerank_documents_ranked_total", model="lex") >= len(DOCS)


def test_client_sync_and_async(server, expected):
    from surerank.serve import AsyncSureRankClient, ServeError, SureRankClient

    with SureRankClient(server.url, api_key=KEY) as client:
        response = client.rerank(QUERY, DOCS, top_n=2, return_documents=True)
        assert response.indices == [item.index for item in expected.items[:2]]
        assert response.results[0].document == {"text": DOCS[expected.items[0].index]}
        assert [m["id"] for m in client.models()] == ["lex", "chunky", "trunc"]
        with pytest.raises(ServeError) as error:
            client.rerank("q", ["d"] * 21)
        assert error.value.status == 413 and "max_documents" in str(error.value)

    async def many() -> list[list[int]]:
        async with AsyncSureRankClient(server.url, api_key=KEY) as client:
            # concurrent requests with different document orders: each must get its own answer
            orders = [DOCS[i:] + DOCS[:i] for i in range(len(DOCS))]
            answers = await asyncio.gather(*(client.rerank(QUERY, docs) for docs in orders))
            return [[docs[r.index] for r in a.results] for docs, a in zip(orders, answers, strict=True)]

    texts = [DOCS[item.index] for item in expected.items]
    for got in asyncio.run(many()):
        assert got[:3] == texts[:3]


def test_langchain_compressor(server, expected):
    from langchain_core.documents import Document

    from surerank.serve.integrations.langchain import SureRankCompressor

    documents = [Document(page_content=d, metadata={"n": i}) for i, d in enumerate(DOCS)]
    compressor = SureRankCompressor(base_url=server.url, api_key=KEY, top_n=3)
    kept = compressor.compress_documents(documents, QUERY)
    assert [d.metadata["n"] for d in kept] == [item.index for item in expected.items[:3]]
    assert kept[0].metadata["relevance_score"] == pytest.approx(expected.items[0].score)
    again = asyncio.run(compressor.acompress_documents(documents, QUERY))
    assert [d.metadata["n"] for d in again] == [d.metadata["n"] for d in kept]


def test_llamaindex_postprocessor(server, expected):
    from llama_index.core.schema import NodeWithScore, TextNode

    from surerank.serve.integrations.llamaindex import SureRankPostprocessor

    nodes = [NodeWithScore(node=TextNode(text=d, id_=f"n{i}"), score=0.0) for i, d in enumerate(DOCS)]
    post_processor = SureRankPostprocessor(base_url=server.url, api_key=KEY, top_n=3)
    out = post_processor.postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.id_ for n in out] == [f"n{item.index}" for item in expected.items[:3]]
    assert out[0].score == pytest.approx(expected.items[0].score)
    out_async = asyncio.run(post_processor.apostprocess_nodes(nodes, query_str=QUERY))
    assert [n.node.id_ for n in out_async] == [n.node.id_ for n in out]


# -- wire details (issue 12, defect 6 and the HTTP part of defect 3) ------------------------------------


def test_every_error_body_has_detail_beside_message(server):
    """llama-index's JinaRerank reads resp["detail"] on any error (KeyError before); Cohere reads message."""
    errors = [
        post(server, "/v2/rerank", {"query": "q", "documents": ["a"]}, key=None),  # 401
        post(server, "/v2/rerank", {"model": "nope", "query": "q", "documents": ["a"]}),  # 404
        post(server, "/v2/rerank", {"query": "q", "documents": ["d"] * 21}),  # 413
        post(server, "/v1/rerank", {"query": "q", "documents": ["a"], "colour": "red"}),  # 422, pydantic
        post(server, "/v1/rerank", {"query": "q", "documents": [{"title": "a"}]}),  # 422, the app
        httpx.get(f"{server.url}/no/such/path", timeout=10),  # 404, Starlette
    ]
    assert [e.status_code for e in errors] == [401, 404, 413, 422, 422, 404]
    for error in errors:
        body = error.json()
        assert body["detail"] == body["message"] == body["error"] and body["detail"], body


def test_jina_shaped_error_reaches_a_jina_client_as_its_message(server):
    """What llama-index's JinaRerank does with an answer: results, else RuntimeError(resp["detail"])."""
    resp = post(server, "/v1/rerank", {"model": "jina-reranker-v2-base-multilingual", "query": "q",
                                       "documents": ["a"], "top_n": 1}).json()
    assert "results" not in resp
    with pytest.raises(RuntimeError, match="model: 'jina-reranker-v2-base-multilingual' is not served"):
        raise RuntimeError(resp["detail"])


@pytest.mark.parametrize(("body", "path", "got"), [
    ({"query": "q", "documents": ["a", "b", "c", {"text": None}]}, "documents[3].text", "got null"),
    ({"query": "q", "documents": ["a", "b", "c", {"title": "no text"}]}, "documents[3].text", "missing"),
    ({"query": "q", "documents": ["a", {"text": 7}]}, "documents[1].text", "got a number"),
    ({"query": "q", "documents": ["a", None]}, "documents[1]", "got null"),
    ({"query": None, "documents": ["a"]}, "query", "got null"),
    ({"query": ["q"], "documents": ["a"]}, "query", "got a list"),
    ({"documents": ["a"]}, "query", "Field required"),
])
def test_missing_or_non_string_text_is_422_naming_the_field_path(server, body, path, got):
    response = post(server, "/v1/rerank", body)
    assert response.status_code == 422, response.text
    message = response.json()["message"]
    assert message.startswith(f"{path}: ") and got in message, message
    assert message.count(";") <= 1, message  # one field, not a member-by-member wall of union errors


def test_tei_null_text_is_422_naming_texts_index(server):
    response = post(server, "/rerank", {"query": "q", "texts": ["a", "b", None]})
    assert response.status_code == 422
    assert response.json()["message"] == "texts[2]: expected a string, got null"


def test_bad_json_names_the_byte_position(server):
    headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    raw = '{"query": "café", "documents": [}'.encode()
    response = httpx.post(f"{server.url}/v2/rerank", content=raw, headers=headers, timeout=10)
    assert response.status_code == 422
    # json counts characters (32 here); the byte offset (33: é is two bytes) is what the client can find
    assert response.json()["message"].startswith(f"body, byte {raw.index(b'}')}: JSON decode error"), response.text


def test_cohere_v1_rank_fields(server):
    import cohere

    documents = [{"title": "solar panels", "body": "bananas", "id": "a"},
                 {"title": "bananas", "body": "solar panels convert sunlight", "id": "b"},
                 {"title": "sunlight", "body": "solar panels", "id": "c"}]
    query = "solar panels sunlight"
    ranker = make_ranker(RANKER)
    by_title = ranker.rank(query, [d["title"] for d in documents])
    both = ranker.rank(query, [f"title: {d['title']}\nbody: {d['body']}" for d in documents])
    client = cohere.Client(api_key=KEY, base_url=server.url)  # the official v1 client posts /v1/rerank
    response = client.rerank(model="lex", query=query, documents=documents, rank_fields=["title"],
                             return_documents=True)
    assert [r.index for r in response.results] == [item.index for item in by_title.items]
    assert [r.relevance_score for r in response.results] == pytest.approx(by_title.scores)
    assert response.results[0].document.id == documents[response.results[0].index]["id"]  # echoed as sent
    response = client.rerank(model="lex", query=query, documents=documents, rank_fields=["title", "body"])
    assert [r.relevance_score for r in response.results] == pytest.approx(both.scores)
    # an object without a ranked field is refused naming it, never ranked as ""
    missing = post(server, "/v1/rerank", {"query": query, "rank_fields": ["title", "body"],
                                          "documents": [*documents, {"title": "no body"}]})
    assert missing.status_code == 422
    assert missing.json()["message"].startswith("documents[3].body: missing; rank_fields names it")
    wrong = post(server, "/v1/rerank", {"query": query, "rank_fields": ["title"], "documents": [{"title": 3}]})
    assert wrong.status_code == 422 and wrong.json()["message"] == "documents[0].title: expected a string, got a number"
    with pytest.raises(cohere.errors.UnprocessableEntityError) as error:  # the SDK's error path
        client.rerank(model="lex", query=query, documents=[{"body": "x"}], rank_fields=["title"])
    assert "documents[0].title" in error.value.body["message"]


def test_cohere_v1_max_chunks_per_doc(server):
    """The chunky model scores 4-word windows, the best deciding; the match sits in the third window."""
    import cohere

    query = "solar panels"
    documents = ["solar power", "one two three four five six seven eight solar panels here now", "panels"]
    client = cohere.Client(api_key=KEY, base_url=server.url)
    whole = {r.index: r for r in client.rerank(model="chunky", query=query, documents=documents).results}
    assert whole[1].relevance_score == 2.0 and whole[0].relevance_score == 1.0
    capped = post(server, "/v1/rerank", {"model": "chunky", "query": query, "documents": documents,
                                         "max_chunks_per_doc": 2})
    assert capped.status_code == 200, capped.text
    body = capped.json()
    by_index = {r["index"]: r for r in body["results"]}
    assert by_index[1]["relevance_score"] == 0.0 and by_index[1]["truncated"] is True  # the third not scored
    assert any("max_chunks_per_doc=2" in w for w in body["meta"]["warnings"])
    three = client.rerank(model="chunky", query=query, documents=documents, max_chunks_per_doc=3)
    assert {r.index: r.relevance_score for r in three.results} == {i: r.relevance_score for i, r in whole.items()}
    # a model that scores one window per document: 1 is exactly that; more is refused, naming the field
    one = post(server, "/v1/rerank", {"model": "trunc", "query": query, "documents": documents,
                                      "max_chunks_per_doc": 1})
    assert one.status_code == 200 and {r["index"]: r["relevance_score"] for r in one.json()["results"]}[1] == 0.0
    for model, value, expected in [("trunc", 3, "long_documents=passages"), ("lex", 1, "does not split")]:
        refused = post(server, "/v1/rerank", {"model": model, "query": query, "documents": documents,
                                              "max_chunks_per_doc": value})
        assert refused.status_code == 422, refused.text
        assert refused.json()["message"].startswith("max_chunks_per_doc: ") and expected in refused.json()["message"]


def test_max_chunks_per_doc_equals_the_embedding_rankers_passage_cap():
    """In-process, with the real embedding model in passages mode: the served variant scores what a ranker
    built with max_passages scores (the cap goes through the model's own passage machinery)."""
    from fastapi.testclient import TestClient

    import surerank
    from surerank.serve import ModelConfig, ServeConfig, create_app

    query = "how long do fleas live"
    long_doc = "The stock market closed higher today. " * 12 + "Adult fleas live two to three months on a host."
    docs = ["Fleas are insects.", long_doc, "Cats and dogs get fleas."]
    ranker = surerank.Reranker("embedding", long_documents="passages", max_length=32)
    config = ServeConfig(models=(ModelConfig("emb", "embedding"),), warmup=False)
    with TestClient(create_app(config, rankers={"emb": ranker})) as client:
        for cap in (1, 2):
            response = client.post("/v1/rerank", json={"query": query, "documents": docs, "max_chunks_per_doc": cap})
            assert response.status_code == 200, response.text
            want = surerank.Reranker("embedding", long_documents="passages", max_length=32,
                                     max_passages=cap).rank(query, docs)
            got = {r["index"]: r for r in response.json()["results"]}
            for item in want.items:
                assert got[item.index]["relevance_score"] == pytest.approx(item.score, abs=1e-5)
            assert got[1]["truncated"] is True
        full = client.post("/v1/rerank", json={"query": query, "documents": docs}).json()
        assert {r["index"]: r["relevance_score"] for r in full["results"]} == pytest.approx(
            {item.index: item.score for item in ranker.rank(query, docs).items}, abs=1e-5)
    assert ranker.policy.max_passages is None  # the served ranker itself is untouched


def test_chunk_cap_refuses_what_it_cannot_mean():
    """max_chunks_per_doc means Cohere's 'best of at most N chunks', or a 422 naming why not."""
    from serve_support import OverlapRanker, PassageOverlapRanker
    from surerank.errors import InputError
    from surerank.serve.app import chunk_cap

    assert chunk_cap("m", PassageOverlapRanker(), 3) == (3, 3, None)
    assert chunk_cap("m", PassageOverlapRanker(long_documents="truncate"), 1) == (None, 1, None)
    assert chunk_cap("m", PassageOverlapRanker(max_passages=3), 3) == (None, 3, None)
    cap, scored, warning = chunk_cap("m", PassageOverlapRanker(max_passages=2), 5)
    assert (cap, scored) == (None, 2) and "max_passages=2" in warning  # the model's own cap, said aloud
    for ranker, expected in [(PassageOverlapRanker(aggregate="mean"), "'mean', not by the best chunk"),
                             (PassageOverlapRanker(long_documents="truncate"), "long_documents=passages"),
                             (OverlapRanker(), "does not split documents")]:
        with pytest.raises(InputError, match="max_chunks_per_doc") as error:
            chunk_cap("m", ranker, 2)
        assert expected in str(error.value)


def test_max_chunks_per_doc_with_calibrated_extras_is_refused(tmp_path):
    """A calibration fitted on the model's own passage cap does not hold for scores of fewer chunks: asking for
    both would give silently wrong probabilities, so it is a 422 naming the field."""
    from fastapi.testclient import TestClient

    from serve_support import PassageOverlapRanker
    from surerank.serve import ModelConfig, ServeConfig, create_app
    from surerank.trust import fit_trust
    from surerank.types import Query

    ranker = PassageOverlapRanker()
    docs = ["fleas live months on a host", "stock market news today", "fleas and ticks on cats " * 3,
            "weather report"]
    queries = [Query.from_texts(q, docs, id=f"q{i}") for i, q in enumerate(["fleas host", "cats fleas", "market"])]
    qrels = {"q0": {"0": 2, "2": 1}, "q1": {"2": 2}, "q2": {"1": 2}}
    artifact = tmp_path / "cal.trust.json"
    fit_trust(ranker.rank_many(queries), qrels, ranker.describe(), calibration="platt").save(artifact)
    config = ServeConfig(models=(ModelConfig("cal", "passage-overlap", calibration=str(artifact)),), warmup=False)
    with TestClient(create_app(config, rankers={"cal": ranker})) as client:
        body = {"query": "fleas host", "documents": docs, "max_chunks_per_doc": 2}
        assert client.post("/v1/rerank", json=body).status_code == 200
        refused = client.post("/v1/rerank", json={**body, "surerank": {"probability": True}})
        assert refused.status_code == 422
        assert refused.json()["detail"].startswith("max_chunks_per_doc: ")
        calibrated = client.post("/v1/rerank", json={"query": "fleas host", "documents": docs,
                                                     "surerank": {"probability": True}})
        assert calibrated.status_code == 200 and calibrated.json()["results"][0]["probability"] is not None

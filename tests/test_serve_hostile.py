"""The service under hostile input (issue 25), against a real ``surerank serve`` on loopback serving the
default embedding model: bodies of bad items, lone surrogates, deep nesting, clients that leave, and
oversized or slow request heads and bodies.

Each case checks what the issue states as behaviour: a 4xx (or a closed connection) within the stated
time, the server's RSS growth (sampled from /proc/PID/status while the attack runs) under a bound,
/health answering within 1 s throughout, and a normal request answered exactly as before the attack.
Sizes are scaled to the test machine; time bounds are generous for a loaded 2-core machine.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from serve_support import Server, metric

KEY = "hostile-key"
AUTH = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
MIB = 1 << 20
NORMAL = {"query": "how do solar panels make electricity", "documents": [
    "Bananas are rich in potassium.",
    "Solar panels use photovoltaic cells that turn sunlight into electricity.",
    "The grid balances supply and demand.",
    "Photovoltaic modules convert light directly into electric current.",
]}
LEAKS = ("TypeError", "TextEncodeInput", "UnicodeEncodeError", "Traceback", "PydanticSerializationError")
HEADER_TIMEOUT_S = 2.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Probe:
    """While the attack runs: /health every 0.02 s (each must answer 200 within 1 s) and the server's
    RSS sampled with it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.rss: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=1.0) as client:
            while not self._stop.is_set():
                self.rss.append(rss_mib(self.server.process.pid))
                start = time.monotonic()
                try:
                    status = client.get(f"{self.server.url}/health").status_code
                    if status != 200:
                        self.failures.append(f"status {status}")
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                self.latencies.append(time.monotonic() - start)
                self._stop.wait(0.02)

    def __enter__(self) -> Probe:
        self.before = rss_mib(self.server.process.pid)
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self.latencies and time.monotonic() < deadline:  # one answer before the attack starts
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.rss.append(rss_mib(self.server.process.pid))

    @property
    def growth_mib(self) -> float:
        return max(self.rss) - self.before

    def check(self, max_growth_mib: float) -> None:
        assert self.latencies, "the probe never ran"
        # the figures behind the assertions, for `pytest -s` (the issue's closing note quotes them)
        print(f"\n  /health: {len(self.latencies)} probes, slowest {max(self.latencies) * 1000:.0f} ms; "
              f"RSS {self.before:.0f} MiB, growth {self.growth_mib:.1f} MiB (bound {max_growth_mib:.0f} MiB)")
        assert not self.failures, self.failures
        assert max(self.latencies) < 1.0, max(self.latencies)
        assert self.growth_mib < max_growth_mib, (self.before, max(self.rss))


@pytest.fixture(scope="module")
def server():
    srv = Server("--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", "2", "--max-connections", "32",
                 env={"SURERANK_API_KEYS": KEY})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def baseline(server):
    """The normal request's answer before any attack (this also starts the server's worker threads, so
    they do not count as growth later)."""
    response = httpx.post(f"{server.url}/v2/rerank", json=NORMAL, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return [(r["index"], r["relevance_score"]) for r in response.json()["results"]]


def assert_normal(server, baseline) -> None:
    response = httpx.post(f"{server.url}/v2/rerank", json=NORMAL, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    got = [(r["index"], r["relevance_score"]) for r in response.json()["results"]]
    assert [i for i, _ in got] == [i for i, _ in baseline]
    assert [s for _, s in got] == pytest.approx([s for _, s in baseline], abs=1e-5)


def body_of(item: bytes, size: int) -> bytes:
    head, tail = b'{"query":"q","documents":[', b"]}"
    n = (size - len(head) - len(tail)) // (len(item) + 1)
    return head + (item + b",") * (n - 1) + item + tail


# -- 1. bad document items --------------------------------------------------------------------------------


@pytest.mark.parametrize("item", [b"null", b"1", b"{}"])
def test_a_16_mib_body_of_bad_items_is_refused_while_read(server, baseline, item):
    body = body_of(item, 16 * MIB - 4096)  # just under max_body_bytes (16 MiB)
    with Probe(server) as probe:
        start = time.monotonic()
        response = httpx.post(f"{server.url}/v2/rerank", content=body, headers=AUTH, timeout=60)
        elapsed = time.monotonic() - start
    assert response.status_code == 413, response.text[:300]
    message = response.json()["message"]
    assert message.startswith("documents: more than ") and "max_documents=1000" in message, message
    assert elapsed < 3.0  # the issue: within a second (generous here for a loaded machine)
    probe.check(max_growth_mib=3 * len(body) / MIB)  # "a few times its size" (it was 9-12 GB)
    assert_normal(server, baseline)


def test_the_issue_s_200000_nulls_get_the_exact_count(server, baseline):
    body = b'{"query":"q","documents":[' + b"null," * 199_999 + b"null]}"
    with Probe(server) as probe:
        response = httpx.post(f"{server.url}/v2/rerank", content=body, headers=AUTH, timeout=60)
    assert response.status_code == 413
    assert response.json()["message"] == "documents: 200000 documents is over the limit max_documents=1000"
    probe.check(max_growth_mib=16)
    assert_normal(server, baseline)


def test_bad_items_within_the_count_name_the_first_ones_and_how_many(server):
    documents = ["fine"] * 10 + [None] * 990
    response = httpx.post(f"{server.url}/v2/rerank", json={"query": "q", "documents": documents},
                          headers=AUTH, timeout=30)
    assert response.status_code == 422
    message = response.json()["message"]
    assert message.startswith("documents[10]: expected a string or an object with a string 'text', got null")
    assert "documents[14]" in message and "documents[15]" not in message
    assert message.endswith("and 985 more (990 of 1000 documents invalid)"), message
    tei = httpx.post(f"{server.url}/rerank", json={"query": "q", "texts": ["a", 1, {}]}, headers=AUTH, timeout=30)
    assert tei.status_code == 422
    assert tei.json()["message"] == "texts[1]: expected a string, got a number; texts[2]: expected a string, " \
                                    "got an object"


def test_unknown_keys_and_too_many_values_are_refused_before_pydantic(server, baseline):
    extras = ",".join(f'"k{i}":0' for i in range(50_000))
    response = httpx.post(f"{server.url}/v2/rerank", content=f'{{"query":"q","documents":[],{extras}}}',
                          headers=AUTH, timeout=30)
    assert response.status_code == 422
    assert response.json()["message"].startswith("k0, k1, k2, k3, k4 and 49995 more: Extra inputs")
    bomb = b'{"query":"q","documents":[{"text":"a","x":[' + b"{}," * 3_000_000 + b'{}]}]}'
    with Probe(server) as probe:
        response = httpx.post(f"{server.url}/v2/rerank", content=bomb, headers=AUTH, timeout=60)
    assert response.status_code == 413 and "max_json_values=200000" in response.json()["message"]
    probe.check(max_growth_mib=3 * len(bomb) / MIB)
    assert_normal(server, baseline)


def test_without_a_key_the_body_is_not_read(server):
    body = body_of(b"null", 16 * MIB - 4096)
    with Probe(server) as probe:
        response = httpx.post(f"{server.url}/v2/rerank", content=body, timeout=60,
                              headers={"content-type": "application/json"})
    assert response.status_code == 401
    probe.check(max_growth_mib=3 * len(body) / MIB)


# -- 2. text that cannot be encoded -----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "raw", "field"), [
    ("/v2/rerank", rb'{"query":"q","documents":["ok","\ud800"]}', "documents[1]"),
    ("/v1/rerank", rb'{"query":"q\udfff","documents":["ok"]}', "query"),
    ("/rerank", rb'{"query":"q","texts":["ok","x\ud800y"]}', "texts[1]"),
    ("/v2/rerank", rb'{"query":"q","documents":[{"text":"a\ud800\u0041"}]}', "documents[0].text"),
    ("/v2/rerank", rb'{"query":"q","return_documents":true,"documents":[{"text":"ok","meta":{"k":"\udc00"}}]}',
     "documents[0].meta.k"),
    ("/v2/rerank", rb'{"query":"q","return_documents":true,"documents":[{"text":"ok","\ud800":1}]}',
     "documents[0]"),
])
def test_a_lone_surrogate_is_422_naming_the_field(server, path, raw, field):
    response = httpx.post(f"{server.url}{path}", content=raw, headers=AUTH, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(f"{field}: "), response.text
    assert "not valid Unicode" in response.json()["message"]
    assert not any(leak in response.text for leak in LEAKS), response.text
    # a valid pair is text like any other
    fine = httpx.post(f"{server.url}/v2/rerank", content=rb'{"query":"q","documents":["\ud83d\ude00"]}',
                      headers=AUTH, timeout=30)
    assert fine.status_code == 200, fine.text


# -- 3. deep nesting in an echoed document ----------------------------------------------------------------


def test_deep_nesting_in_an_echoed_document_is_422_and_shallow_is_echoed(server, baseline):
    nested = json.loads("[" * 300 + "]" * 300)
    deep = {"query": "q", "return_documents": True, "documents": [{"text": "a", "x": nested}]}
    response = httpx.post(f"{server.url}/v2/rerank", json=deep, headers=AUTH, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith("documents[0].x[0]") and "max_json_depth=32" in response.text
    assert not any(leak in response.text for leak in LEAKS)
    nested = json.loads("[" * 25 + "]" * 25)
    shallow = {"query": "q", "return_documents": True, "documents": [{"text": "a", "x": nested, "y": "\u00e9"}]}
    echoed = httpx.post(f"{server.url}/v2/rerank", json=shallow, headers=AUTH, timeout=30)
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["results"][0]["document"] == shallow["documents"][0]
    assert_normal(server, baseline)


# -- 5. request heads and bodies: size and time -----------------------------------------------------------


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _answer(sock: socket.socket, wait_s: float) -> tuple[int | None, bool]:
    """(status the server answered or None, whether the server closed the connection) within wait_s."""
    sock.settimeout(wait_s)
    data, closed = b"", False
    try:
        while chunk := sock.recv(65536):
            data += chunk
        closed = True
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    except TimeoutError:
        pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, closed


def test_huge_header_lines_are_431_and_cost_no_memory(server, baseline):
    """Four connections each sending a 16 MiB header line, without a key (the issue: 4 x 64 MiB, +256 MB
    held until the client closed)."""
    results: list[tuple[int | None, bool, float]] = []

    def attack() -> None:
        sock = _connect(server)
        start = time.monotonic()
        try:
            sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nX-Junk: ")
            for _ in range(16):
                sock.sendall(b"a" * MIB)
        except OSError:
            pass  # the server closed the connection while we were still sending: what we want
        status, closed = _answer(sock, 10)
        results.append((status, closed, time.monotonic() - start))
        sock.close()

    before_closed = metric(server.url, "surerank_connections_closed_total", reason="header_too_large")
    with Probe(server) as probe:
        threads = [threading.Thread(target=attack) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert len(results) == 4
    for status, closed, elapsed in results:
        assert closed and status in (431, None), results  # a reset may eat the 431 the server wrote
        assert elapsed < 5.0, results
    assert any(status == 431 for status, _, _ in results), results
    probe.check(max_growth_mib=16)
    assert metric(server.url, "surerank_connections_closed_total", reason="header_too_large") - before_closed == 4
    assert "request head over the limit max_header_bytes=16384" in server.output()
    assert_normal(server, baseline)


def test_slow_heads_and_slow_bodies_are_closed(server, baseline):
    """20 connections dribbling their request head (the issue: 200, never closed) and one body that stops
    halfway: each is answered 408 and closed after its timeout (2 s here)."""
    closed_before = {reason: metric(server.url, "surerank_connections_closed_total", reason=reason)
                     for reason in ("header_timeout", "body_timeout")}
    heads = [_connect(server) for _ in range(20)]
    for sock in heads:
        sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\n")
    body = _connect(server)
    body.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                 b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"query\": ")
    kept = _connect(server)  # a kept-alive connection: one request answered, the next one's head stalls
    kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\n")
    start = time.monotonic()
    with Probe(server) as probe:
        for sock in heads[:5]:  # keep dribbling: bytes arriving do not reset the deadline
            sock.sendall(b"X-A: b\r\n")
        answers = [_answer(sock, 10) for sock in [*heads, body]]
        kept.settimeout(10)
        second = b""
        while chunk := kept.recv(65536):
            second += chunk
    elapsed = time.monotonic() - start
    for sock in [*heads, body, kept]:
        sock.close()
    assert all(answer == (408, True) for answer in answers), answers
    assert second.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 408 " in second, second
    assert elapsed < HEADER_TIMEOUT_S + 8.0
    probe.check(max_growth_mib=16)
    assert metric(server.url, "surerank_connections_closed_total", reason="header_timeout") - \
        closed_before["header_timeout"] >= 21
    assert metric(server.url, "surerank_connections_closed_total", reason="body_timeout") - \
        closed_before["body_timeout"] == 1
    assert_normal(server, baseline)


def test_past_max_connections_a_request_gets_503_and_is_counted(server, baseline):
    before = metric(server.url, "surerank_connections_closed_total", reason="max_connections")
    held = [_connect(server) for _ in range(32)]
    for sock in held:
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # a head not finished: holds a connection slot
    time.sleep(0.3)  # let the server accept them all
    try:
        refused = httpx.get(f"{server.url}/health", timeout=5)
    finally:
        for sock in held:
            sock.close()
    assert refused.status_code == 503
    assert "Exceeded concurrency limit" in server.output()  # uvicorn's log line
    assert _wait_for(lambda: httpx.get(f"{server.url}/health", timeout=5).status_code == 200)
    assert metric(server.url, "surerank_connections_closed_total", reason="max_connections") - before == 1
    assert_normal(server, baseline)


# -- 4. clients that leave, and a real fault --------------------------------------------------------------


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    gate = tmp_path_factory.mktemp("gate") / "open"
    srv = Server("--model", "slow=serve_support:SlowRanker", "--option", f"slow.gate={gate}",
                 "--model", "boom=serve_support:FailingRanker", "--max-wait-ms", "1", "--no-warmup")
    yield srv, gate
    gate.touch()
    srv.stop()


def _wait_for(check, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_queued_work_of_clients_that_left_is_dropped_not_ranked(slow):
    server, gate = slow
    started = Path(str(gate) + ".started")
    gate.unlink(missing_ok=True)
    started.unlink(missing_ok=True)
    first = {}

    def in_model() -> None:
        first["response"] = httpx.post(f"{server.url}/v2/rerank", timeout=60,
                                       json={"model": "slow", "query": "a b", "documents": ["a", "b", "c"]})

    holder = threading.Thread(target=in_model)
    holder.start()
    assert _wait_for(started.exists), server.output()
    # ten clients send 200 documents each, then leave while their requests wait behind the batch
    body = json.dumps({"model": "slow", "query": "q", "documents": [f"doc {i}" for i in range(200)]}).encode()
    leaving = []
    for _ in range(10):
        sock = _connect(server)
        sock.sendall(b"POST /v2/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        leaving.append(sock)
    assert _wait_for(lambda: metric(server.url, "surerank_queue_requests", model="slow") == 10), server.output()
    for sock in leaving:
        sock.close()
    assert _wait_for(lambda: metric(server.url, "surerank_requests_dropped_total", model="slow",
                                    reason="client_gone") == 10), server.output()
    assert metric(server.url, "surerank_documents_dropped_total", model="slow", reason="client_gone") == 2000
    assert metric(server.url, "surerank_queue_requests", model="slow") == 0
    gate.touch()
    holder.join(60)
    assert first["response"].status_code == 200
    # only the batch that was in the model was ranked: 3 documents, not 2003
    assert metric(server.url, "surerank_documents_ranked_total", model="slow") == 3
    assert metric(server.url, "surerank_http_requests_total", path="/v2/rerank", status="499") == 10
    assert "a client disconnected while waiting; dropped from the queue, 200 documents not ranked" in server.output()


def test_a_real_fault_is_a_500_with_an_id_and_no_exception_text(slow):
    server, gate = slow
    gate.touch()
    response = httpx.post(f"{server.url}/v2/rerank", json={"model": "boom", "query": "boom", "documents": ["a"]},
                          timeout=30)
    assert response.status_code == 500
    error_id = response.headers["x-surerank-error-id"]
    assert response.json()["message"] == f"internal error (id {error_id}); the server log has the details"
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert _wait_for(lambda: f"internal error {error_id}" in server.output())
    assert "weights.bin is corrupt" in server.output()  # the log has the details
    assert metric(server.url, "surerank_internal_errors_total", path="/v2/rerank") == 1


def test_the_library_refuses_a_lone_surrogate_naming_the_document():
    """Outside the service too: an InputError naming the text, not a tokenizer's TypeError."""
    from surerank.errors import InputError
    from surerank.types import Query

    with pytest.raises(InputError, match=r"documents\[1\] \(id '1'\): not valid Unicode \(a lone surrogate \\ud800"):
        Query.from_texts("q", ["fine", "bad \ud800"])
    with pytest.raises(InputError, match="the query text: not valid Unicode"):
        Query.from_texts("q\udfff", ["fine"])
    assert Query.from_texts("café", ["\U0001f600"]).candidates[0].text == "\U0001f600"


def test_numbers_past_64_bits_are_json_and_past_a_double_are_422(server):
    """yajl (the guard's tokenizer) refuses both; JSON allows the first, and no JSON answer carries inf."""
    big = {"query": "q", "return_documents": True, "documents": [{"text": "a", "n": 2**70, "f": -(2**64)}]}
    echoed = httpx.post(f"{server.url}/v2/rerank", json=big, headers=AUTH, timeout=30)
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["results"][0]["document"] == big["documents"][0]
    huge = httpx.post(f"{server.url}/v2/rerank", headers=AUTH, timeout=30,
                      content=b'{"query":"q","return_documents":true,"documents":[{"text":"a","f":1e999}]}')
    assert huge.status_code == 422 and "1e999 is out of range" in huge.json()["message"], huge.text

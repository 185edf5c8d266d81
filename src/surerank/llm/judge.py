"""A deterministic stand-in for an LLM judge, in-process or behind a real OpenAI-compatible HTTP server.

It reads the prompts of :mod:`surerank.llm.prompts` (query line, passage lines, answer format) and answers
from a utility function — word overlap by default, or graded judgments plus controlled noise in the
strategy benchmark — with plausible first-token log-probabilities.  Tests drive the real HTTP client
against :class:`StandInServer`; its fault script injects 5xx/429 replies, slow and dribbled replies,
dropped connections, malformed bodies, answers and log-probabilities.  No model is involved: this exists
to test mechanics, not to rank well.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class StandInServer:
    """An OpenAI-compatible HTTP server on loopback answering from a :class:`Judge`.

    Serves ``POST /v1/chat/completions`` and ``POST /v1/completions`` (with ``logprobs``/``top_logprobs`` and
    ``echo``).  ``faults`` is a script consumed one entry per request: ``"500"``/``"503"``/``"400"`` (an error
    status), ``"429"`` or ``"429:SECONDS"`` (with ``Retry-After``), ``"slow:SECONDS"`` (sleep before replying),
    ``"dribble:SECONDS"`` (headers at once, then the body one byte every SECONDS), ``"drop"`` (close the
    connection without a reply), ``"bad-json"`` (a body that is not JSON), ``"no-choices"``, ``"empty"`` (no
    content, no log-probabilities), ``"random"`` (random words, log-probabilities over them), ``"garbage"``
    (an answer with no usable content), ``"nan-logprobs"``, ``"no-logprobs"``, ``"echo-ignored"`` (completions
    with ``echo``: only the generated token is scored), ``"think"`` (the answer wrapped in reasoning), or
    ``"ok"``.  ``every = (fault, period)`` injects ``fault`` into requests 0, period, 2·period, ... (counted
    in arrival order) once the script is used up.  ``requests`` counts requests received; ``bodies`` keeps
    them for assertions; ``max_in_flight`` is the most requests it ever served at once (to check client
    concurrency limits).
    """

    def __init__(self, judge: Judge | None = None, host: str = "127.0.0.1", port: int = 0,
                 model: str = "stand-in-judge") -> None:
        self.judge = judge or Judge()
        self.model = model
        self.faults: list[str] = []
        self.every: tuple[str, int] | None = None
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay = 0.0  # seconds every request waits (to make concurrency observable)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._post()
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _post(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with server._lock:
                    number = server.requests
                    server.requests += 1
                    if server.faults:
                        fault = server.faults.pop(0)
                    elif server.every is not None and number % server.every[1] == 0:
                        fault = server.every[0]
                    else:
                        fault = "ok"
                if fault == "drop":  # read the request, then hang up without a word
                    self.close_connection = True
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON"}})
                    return
                with server._lock:
                    server.bodies.append(body)
                status = fault.split(":", 1)[0]
                if status in ("500", "502", "503", "429", "400"):
                    wait = fault.split(":", 1)[1] if ":" in fault else "0"
                    headers = {"Retry-After": wait} if status == "429" else {}
                    self._send(int(status), {"error": {"message": f"injected {fault}"}}, headers)
                    return
                if server.delay:
                    time.sleep(server.delay)
                if fault.startswith("slow:"):
                    time.sleep(float(fault.split(":", 1)[1]))
                if fault == "bad-json":
                    self._send_raw(200, b"{this is not json")
                    return
                if fault == "no-choices":
                    self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
                    return
                path = self.path.rstrip("/")
                if path == "/v1/chat/completions":
                    payload = server._chat(body, fault)
                elif path == "/v1/completions":
                    payload = server._completion(body, fault)
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if fault.startswith("dribble:"):
                    self._dribble(json.dumps(payload).encode(), float(fault.split(":", 1)[1]))
                else:
                    self._send(200, payload)

            def _dribble(self, data: bytes, pause: float) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        time.sleep(pause)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its deadline)
                    pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._send_raw(status, json.dumps(payload).encode(), headers)

            def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> StandInServer:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                        name="stand-in-llm")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- OpenAI wire format --------------------------------------------------------------------------
    def _answer(self, request: LLMRequest, fault: str) -> tuple[str, dict[str, float]]:
        text, logprobs = self.judge.answer(request)
        if fault == "garbage":
            return "I am not sure what you mean ::: ???", {}
        if fault == "random":  # lower-case words: no yes/no, no letter id, no number
            rng = np.random.default_rng(len(request.text()))
            words = [str(w) for w in rng.choice(_RANDOM_WORDS, size=6)]
            return " ".join(words), {w: -float(i + 1) for i, w in enumerate(dict.fromkeys(words))}
        if fault == "think":
            return f"<think>Let me weigh [A] against [B]; No, Yes, 3 > 1.</think>{text}", logprobs
        return text, logprobs

    def _chat(self, body: dict[str, Any], fault: str) -> dict[str, Any]:
        messages = tuple((m.get("role", "user"), m.get("content", "")) for m in body.get("messages", []))
        request = LLMRequest(messages=messages, max_tokens=int(body.get("max_tokens") or 16))
        text, logprobs = self._answer(request, fault)
        if fault != "think":
            text = _cap(text, request.max_tokens)
        if fault == "empty":
            text = ""
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}
        if fault == "nan-logprobs":
            logprobs = dict.fromkeys(logprobs, float("nan"))
        if body.get("logprobs") and body.get("top_logprobs") and fault not in ("empty", "no-logprobs"):
            k = int(body["top_logprobs"])
            top = sorted(logprobs.items(), key=lambda kv: -kv[1])[:k]
            first = text.split()[0] if text.split() else ""
            choice["logprobs"] = {"content": [{
                "token": first, "logprob": logprobs.get(first.strip("[]"), top[0][1] if top else 0.0),
                "top_logprobs": [{"token": t, "logprob": v} for t, v in top]}]}
        return {"id": "chatcmpl-standin", "object": "chat.completion", "model": self.model,
                "choices": [choice], "usage": _usage(request.text(), text)}

    def _completion(self, body: dict[str, Any], fault: str) -> dict[str, Any]:
        prompt = str(body.get("prompt", ""))
        if body.get("echo"):
            # split the prompt into whitespace tokens with offsets; the query's tokens carry the judgment
            tokens, offsets = [], []
            for match in re.finditer(r"\s*\S+", prompt):
                tokens.append(match.group(0))
                offsets.append(match.start())
            cut = prompt.rfind("Question:") + len("Question:")
            q_tokens = [i for i, o in enumerate(offsets) if o >= cut]
            total = self.judge.continuation_logprob(prompt[:cut], prompt[cut:])
            logprobs = [None] + [-0.5] * (len(tokens) - 1)
            for i in q_tokens:
                logprobs[i] = float("nan") if fault == "nan-logprobs" else total / max(1, len(q_tokens))
            scored: dict[str, Any] | None = {"tokens": tokens, "token_logprobs": logprobs, "text_offset": offsets,
                                             "top_logprobs": None}
            text = prompt
            if fault == "echo-ignored":  # only the one generated token comes back, past the prompt
                text, scored = " The", {"tokens": [" The"], "token_logprobs": [-1.25],
                                        "text_offset": [len(prompt)], "top_logprobs": None}
            elif fault in ("no-logprobs", "empty"):
                text, scored = (prompt if fault == "no-logprobs" else ""), None
            return {"id": "cmpl-standin", "object": "text_completion", "model": self.model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": scored}],
                    "usage": {"prompt_tokens": len(tokens), "completion_tokens": 0,
                              "total_tokens": len(tokens)}}
        request = LLMRequest(prompt=prompt, max_tokens=int(body.get("max_tokens") or 16))
        text, logprobs = self._answer(request, fault)
        choice: dict[str, Any] = {"index": 0, "text": _cap(text, request.max_tokens), "finish_reason": "stop"}
        if body.get("logprobs"):
            k = int(body["logprobs"])
            top = dict(sorted(logprobs.items(), key=lambda kv: -kv[1])[:k])
            choice["logprobs"] = {"tokens": [text], "token_logprobs": [0.0], "top_logprobs": [top],
                                  "text_offset": [len(prompt)]}
        return {"id": "cmpl-standin", "object": "text_completion", "model": self.model, "choices": [choice],
                "usage": _usage(prompt, text)}


_RANDOM_WORDS = ("lorem", "ipsum", "dolor", "amet", "consectetur", "adipiscing", "elit", "sed", "tempor",
                 "incididunt", "labore", "magna", "aliqua", "veniam", "quis", "nostrud")


def _cap(text: str, max_tokens: int) -> str:
    """Honour max_tokens roughly (4 characters a token), as a real server truncates long answers."""
    return text[: max(1, max_tokens) * 4]


def _usage(prompt: str, answer: str) -> dict[str, int]:
    p, c = max(1, len(prompt) // 4), max(1, len(answer) // 4)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

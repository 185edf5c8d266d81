"""The sandbox against hostile candidates, and read-only SQL with a time limit.

Each hostile program runs in one batch beside a well-behaved one: each must be contained (killed or failed
within its limit, reported per candidate), the host must see no trace of it, and the good program's result
must be unaffected.  The attacks of tests/sandbox_scenarios.py run on both isolation tools (bwrap, unshare) and,
when the suite runs as root, both as root and as an unprivileged uid (setpriv).
"""

from __future__ import annotations

import json
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

import sandbox_scenarios as scenarios
from surerank.errors import InputError
from surerank.sandbox import Limits, Sandbox, SandboxUnavailableError, run_sql
from surerank.sandbox import process as sandbox_process

WALL = 3.0
GOOD = "print(sum(range(10)))"
UNPRIVILEGED_UID = 2_000_000_321  # the suite's stand-in for a library user who is not root
TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def _tool_or_skip(tool: str) -> Sandbox:
    try:
        return Sandbox(Limits(wall_seconds=WALL, cpu_seconds=2, memory_bytes=256 * 2**20), max_parallel=4, tool=tool)
    except SandboxUnavailableError as exc:  # e.g. a container that refuses namespaces: the refusal is the behaviour
        pytest.skip(f"{tool} unavailable here: {exc}")


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def sandbox(request):
    return _tool_or_skip(request.param)


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
        assert result.isolation == "namespaces" and result.tool == sandbox.tool_used
    assert by_name["infinite loop"].status in ("timeout", "cpu_limit")
    assert by_name["fork bomb"].status in ("timeout", "cpu_limit", "error", "killed")
    assert by_name["memory bomb"].status in ("memory_limit", "timeout")  # timeout only on a starved CPU
    assert by_name["10 GB write"].status == "file_limit"
    secret = by_name["env secret"]
    assert "hunter2" not in secret.stdout + secret.stderr
    assert not by_name["write outside"].ok
    # the host's /tmp is not even there: nothing of the host but the interpreter is in view
    assert not by_name["write to /tmp"].ok and "No such file or directory" in by_name["write to /tmp"].detail
    assert not world_writable.exists()
    assert by_name["os.system"].status == "error"  # the shell ran but its write was refused
    assert not by_name["network"].ok and "connected" not in by_name["network"].stdout
    assert by_name["endless output"].stdout_truncated
    assert len(by_name["endless output"].stdout) <= sandbox.limits.output_bytes
    assert not any(outside.iterdir())
    assert hits == []
    assert elapsed < 60  # a guard against a hang, not a speed claim
    assert scenarios.sandboxed_processes_left(10.0) == []  # every process the fork bomb made is gone


def test_program_sees_an_empty_private_working_directory(sandbox):
    first = sandbox.run_python("import os\nopen('note', 'w').write('x')\nprint(sorted(os.listdir('.')))")
    second = sandbox.run_python("import os\nprint(sorted(os.listdir('.')))")
    assert first.ok and first.stdout.strip() == "['main.py', 'note']"
    assert second.ok and second.stdout.strip() == "['main.py']"


def test_stdin_and_extra_files_reach_the_program(sandbox):
    result = sandbox.run_python("import sys, json\nprint(json.load(open('data.json'))['k'] + sys.stdin.read())",
                                stdin="!", files={"data.json": '{"k": "v"}'})
    assert result.ok and result.stdout.strip() == "v!"


def test_undecodable_text_or_oversized_files_fail_the_program_not_the_sandbox(sandbox):
    lone = sandbox.run_python("print('\ud800')")
    big = sandbox.run_python(GOOD, files={"data.txt": "x" * (sandbox.limits.work_bytes + 1)})
    assert lone.status == "error" and "SyntaxError" in lone.stderr
    assert big.status == "error" and "cannot write the program's files" in big.detail
    assert sandbox.run_python(GOOD).ok  # the next run is unaffected


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
    assert dropped.status == "refused" and "change of the schema" in dropped.detail
    assert inserted.status == "refused" and inserted.detail == "not allowed: INSERT customer"
    assert runaway.status == "timeout" and runaway.seconds < 5
    assert database.read_bytes() == before
    assert run_sql(database, "SELECT name FROM customer WHERE city = 'London' ORDER BY id").rows == [("Ada",), ("Cy",)]


def test_sql_row_limit_is_reported(database):
    result = run_sql(database, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 50) "
                               "SELECT x FROM n", max_rows=10)
    assert result.status == "row_limit" and len(result.rows) == 10


def test_missing_namespaces_are_refused_not_silently_weakened(monkeypatch):
    monkeypatch.setattr(sandbox_process, "find_tool", lambda name, as_root: ("", f"{name} is not installed"))
    with pytest.raises(SandboxUnavailableError, match="isolation='limits-only'") as refused:
        Sandbox()
    assert "bwrap is not installed" in str(refused.value) and "unshare is not installed" in str(refused.value)
    weaker = Sandbox(Limits(wall_seconds=WALL), isolation="limits-only")
    result = weaker.run_python("while True:\n    pass")
    assert result.status in ("timeout", "cpu_limit") and result.isolation == "limits-only" and result.tool == ""


def test_auto_prefers_bwrap_and_names_the_tool_on_every_result():
    box = _tool_or_skip("auto")
    _, bwrap_problem = sandbox_process.find_tool("bwrap", os.geteuid() == 0)
    assert box.tool_used.startswith("bwrap ") if not bwrap_problem else box.tool_used == "unshare"
    assert box.run_python(GOOD).tool == box.tool_used


def test_auto_without_a_usable_bwrap_runs_unshare_and_says_why_once(monkeypatch, caplog):
    """A root caller whose venv sits in a 0700 folder cannot hand the venv's bwrap to a run's uid: auto falls
    back to unshare, one warning names why, and every result names the tool that ran."""
    real = sandbox_process.find_tool
    monkeypatch.setattr(sandbox_process, "find_tool", lambda name, as_root: (
        ("", "/venv/bwrap cannot be run by the run's unprivileged uid") if name == "bwrap" else real(name, as_root)))
    with caplog.at_level("WARNING", logger="surerank.sandbox.process"):
        try:
            box = Sandbox(Limits(wall_seconds=WALL))
        except SandboxUnavailableError as exc:
            pytest.skip(f"unshare unavailable here: {exc}")
    warned = [r.getMessage() for r in caplog.records if "not the tool preferred" in r.getMessage()]
    assert len(warned) == 1 and "cannot be run by the run's unprivileged uid" in warned[0], warned
    assert box.tool_used == "unshare" and box.run_python(GOOD).tool == "unshare"


def test_an_unknown_tool_is_refused():
    with pytest.raises(InputError, match="tool: must be"):
        Sandbox(tool="docker")  # type: ignore[arg-type]


def test_a_sandbox_dies_with_its_caller(sandbox, tmp_path):
    """A caller that crashes mid-run must not leave its untrusted program running past its own wall clock."""
    script = tmp_path / "caller.py"
    script.write_text(
        "import os, threading, time\n"
        "from surerank.sandbox import Limits, Sandbox\n"
        f"box = Sandbox(Limits(wall_seconds=600, cpu_seconds=600), tool={sandbox.tool_used.split()[0]!r})\n"
        "threading.Thread(target=box.run_python, args=('while True:\\n    pass',), daemon=True).start()\n"
        "time.sleep(3)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    assert scenarios.sandboxed_processes_left(10.0) == []


# ------------------------------------------------------------------------------------- the hostile suite
# Each attack runs on both tools, as the suite's own user and (when that is root) as an unprivileged uid.


def _unprivileged_python() -> str | None:
    """An interpreter an unprivileged uid can run, of this one's minor version (the venv's packages must load)."""
    for candidate in (sandbox_process.base_executable(), shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if candidate and sandbox_process.world_executable(candidate):
            version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                     capture_output=True, text=True).stdout.strip()
            if version == str(sys.version_info[:2]):
                return candidate
    return None


def _import_paths() -> list[str]:
    import numpy

    return [str(TESTS), str(SRC), str(Path(numpy.__file__).resolve().parents[1])]


CALLERS = ["self", "unprivileged"] if os.geteuid() == 0 else ["self"]


@pytest.fixture(params=CALLERS)
def attack(request, tmp_path):
    """Runs a scenario as the suite's user, or as UNPRIVILEGED_UID through setpriv."""
    if request.param == "self":
        return lambda name, **kwargs: getattr(scenarios, name)(**kwargs)
    python = _unprivileged_python()
    if python is None or shutil.which("setpriv") is None:
        pytest.skip("no interpreter of this version that an unprivileged uid can run, or no setpriv")
    paths = _import_paths()
    if not all(sandbox_process.world_executable(p) for p in paths):
        pytest.skip(f"the suite's folders {paths} are not reachable by an unprivileged uid")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, UNPRIVILEGED_UID, UNPRIVILEGED_UID)

    def run(name: str, **kwargs):
        done = subprocess.run(
            ["setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups", "--",
             python, "-I", "-c", "import runpy, sys; sys.path[:0] = sys.argv[1].split(':'); sys.argv = "
             "['sandbox_scenarios.py', *sys.argv[2:]]; runpy.run_module('sandbox_scenarios', run_name='__main__')",
             ":".join(paths), name, json.dumps(kwargs)],
            capture_output=True, text=True, timeout=120, cwd=str(home),
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"})
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    run.uid = UNPRIVILEGED_UID
    return run


TOOLS = ["bwrap", "unshare"]


@pytest.fixture(params=TOOLS)
def tool(request):
    _tool_or_skip(request.param)
    return request.param


def _caller_uid(attack) -> int:
    return getattr(attack, "uid", os.geteuid())


def test_hostile_the_callers_secrets_and_private_files_are_not_even_found(attack, tool, tmp_path):
    owner = _caller_uid(attack)
    home = tmp_path / "victim-home"
    (home / ".aws").mkdir(parents=True)
    secret = home / ".aws" / "credentials"
    secret.write_text("aws_secret_access_key = hunter2\n")
    os.chmod(secret, 0o600)
    private = tmp_path / "service"  # a service's folder: 0700, yet its .env is 0644
    private.mkdir()
    env_file = private / ".env"
    env_file.write_text("DB_PASSWORD=hunter2\n")
    os.chmod(env_file, 0o644)
    os.chmod(private, 0o700)
    world = Path("/tmp") / f"surerank-world-readable-{os.getpid()}"
    world.write_text("anyone on the host may read this\n")
    os.chmod(world, 0o644)
    for path in (home, home / ".aws", secret, private, env_file):
        os.chown(path, owner, owner)
    for folder in (tmp_path, tmp_path.parent):
        os.chmod(folder, 0o755)  # the caller reaches its own files on the host: the sandbox must not
    try:
        paths = [str(secret), str(env_file), str(world), str(home), "/etc/passwd", "/etc/hostname", "/root", "/home",
                 "/tmp", "/run", "/var", "/opt", "/srv", "/mnt", str(SRC), os.path.expanduser("~")]
        report = attack("probe_paths", tool=tool, paths=paths)
    finally:
        world.unlink()
    assert report["status"] == "ok", report
    assert {p: v for p, v in report["seen"].items() if v != "missing"} == {}
    assert set(report["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sandbox", "sbin",
                                   "usr"}, report["root"]
    assert report["uid"] == sandbox_process.SANDBOX_UID and report["tool"].split()[0] == tool


def test_hostile_a_host_unix_socket_receives_nothing(attack, tool, tmp_path):
    path = Path("/tmp") / f"surerank-sock-{os.getpid()}-{tool}"
    abstract = f"surerank-abstract-{os.getpid()}-{tool}"
    received: list[bytes] = []
    servers = []
    for address in (str(path), "\0" + abstract):
        server = socket.socket(socket.AF_UNIX)
        server.bind(address)
        server.listen(4)
        server.settimeout(0.2)
        servers.append(server)
    os.chmod(path, 0o777)  # any local user may connect to it: the sandbox must not see it
    stop = threading.Event()

    def accept(server: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            received.append(conn.recv(64) or b"<connected>")
            conn.close()

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        report = attack("unix_socket", tool=tool, path=str(path), abstract=abstract)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for server in servers:
            server.close()
        path.unlink(missing_ok=True)
    assert report["status"] == "ok", report
    assert report["stdout"] == "FileNotFoundError ConnectionRefusedError", report
    assert received == []


def test_hostile_fork_bombs_never_change_a_neighbours_result(attack, tool):
    report = attack("fork_bombs", tool=tool, bombs=4, good=4)
    assert report["good"] == [["ok", "45", ""]] * 4, report["good"]
    assert all(status in ("timeout", "cpu_limit", "error", "killed") for status in report["bombs"]), report["bombs"]
    assert report["left_after_5s"] == []

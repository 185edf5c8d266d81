"""Attacks on the sandbox, each a function the test suite runs in-process (as the suite's user) or, when the suite
runs as root, again in a subprocess as an unprivileged uid (``setpriv``): one suite for both callers and both tools.

Every scenario returns plain JSON so that the unprivileged run can hand it back on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time

from surerank.sandbox import Limits, Sandbox
from surerank.sandbox.process import RUN_UID_COUNT, RUN_UID_FIRST

GOOD = "print(sum(range(10)))"
FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"


def _box(tool: str, **limits: float) -> Sandbox:
    return Sandbox(Limits(**{"wall_seconds": 6.0, "cpu_seconds": 3, "memory_bytes": 256 * 2**20, **limits}),
                   tool=tool, max_parallel=8)


def probe_paths(tool: str, paths: list[str]) -> dict:
    """What the program finds at each host path, and what its root holds."""
    program = (
        "import json, os\n"
        f"paths = {paths!r}\n"
        "seen = {}\n"
        "for p in paths:\n"
        "    try:\n"
        "        seen[p] = 'read: ' + (open(p).read(200) if os.path.isfile(p) else repr(sorted(os.listdir(p))))\n"
        "    except FileNotFoundError:\n"
        "        seen[p] = 'missing'\n"
        "    except OSError as exc:\n"
        "        seen[p] = 'error: ' + type(exc).__name__\n"
        "print(json.dumps({'seen': seen, 'root': sorted(os.listdir('/')), 'uid': os.getuid()}))\n"
    )
    result = _box(tool).run_python(program)
    report = json.loads(result.stdout) if result.ok else {}
    return {"status": result.status, "stderr": result.stderr[-500:], "tool": result.tool, **report}


def unix_socket(tool: str, path: str, abstract: str) -> dict:
    """Connect to a host listener through a socket file and through an abstract name; send bytes if it can."""
    program = (
        "import socket\n"
        "out = []\n"
        f"for address in ({path!r}, '\\0' + {abstract!r}):\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n"
        "        s.connect(address)\n"
        "        s.sendall(b'escaped')\n"
        "        out.append('connected')\n"
        "    except OSError as exc:\n"
        "        out.append(type(exc).__name__)\n"
        "print(' '.join(out))\n"
    )
    result = _box(tool).run_python(program)
    return {"status": result.status, "stdout": result.stdout.strip(), "stderr": result.stderr[-500:]}


def fork_bombs(tool: str, bombs: int = 4, good: int = 4) -> dict:
    """``bombs`` fork bombs side by side with ``good`` well-behaved programs; what each did, what is left after."""
    sources = [FORK_BOMB if i % 2 == 0 else GOOD for i in range(2 * max(bombs, good))][: bombs + good]
    results = _box(tool, wall_seconds=4.0, cpu_seconds=2).run_many(sources)
    good_runs = [r for s, r in zip(sources, results) if s == GOOD]
    return {"good": [[r.status, r.stdout.strip(), r.stderr[-300:]] for r in good_runs],
            "bombs": [r.status for s, r in zip(sources, results) if s != GOOD],
            "left_after_5s": sandboxed_processes_left(5.0)}


def sandboxed_processes_left(wait_s: float) -> list[str]:
    """Processes of a sandbox still alive after up to ``wait_s``: a root caller's runs by their own uids, an
    unprivileged caller's by their PID namespace (its own uid, another namespace)."""
    own_ns = os.readlink("/proc/self/ns/pid")
    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
                if os.geteuid() == 0:
                    if RUN_UID_FIRST <= uid < RUN_UID_FIRST + RUN_UID_COUNT:
                        left.append(entry)
                elif uid == os.geteuid() and os.readlink(f"/proc/{entry}/ns/pid") != own_ns:
                    left.append(entry)
            except OSError:
                continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


if __name__ == "__main__":  # python sandbox_scenarios.py NAME JSON_KWARGS, as the unprivileged caller
    print(json.dumps(globals()[sys.argv[1]](**json.loads(sys.argv[2]))))

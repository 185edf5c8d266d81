"""The test harness of the ``exec`` ranker: runs in the sandbox as ``main.py``, beside ``candidate.py``.

Standard library only (it runs under the sandbox's isolated interpreter).  The candidate is hostile until shown
otherwise, so it never holds the channel its results travel on:

- the harness (this process, PID 1 of the sandbox's PID namespace, so no signal from the candidate reaches it,
  and not dumpable, so neither its memory nor its descriptors can be read) alone writes to stdout, the only way
  back to the caller, each record behind a per-run nonce;
- a child forked per candidate load loses stdout/stderr (a capture pipe the harness drains and only inspects)
  and every other descriptor but a result pipe, then loads the candidate and evaluates the test calls one by one,
  handing back each value's canonical JSON;
- the harness times every load and every test from outside (a child that overruns is killed and a fresh one
  takes the next test), accepts records only in order, and names what it saw: an exit before reporting, text
  that looks like result records, exit hooks, a replaced ``sys.stdout``/``sys.stderr``, out-of-order records.

A candidate can only make its own functions return values, which is what the tests measure anyway.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import selectors
import signal
import sys
import time

PR_SET_DUMPABLE = 4
MARKER = "\x00SURERANK-EXEC "
FORGERY_HINTS = ("SURERANK-EXEC", '"ok": true', '"i": ')
CAPTURE_KEPT = 1 << 16  # bytes of the candidate's own output kept for inspection; the rest is drained and dropped


def canonical(value, depth: int = 0):
    """The form results are compared in (floats rounded, tuples as lists, sets sorted): the caller computes the
    expected values with this same function."""
    if depth > 20:
        return repr(value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, (list, tuple)):
        return [canonical(x, depth + 1) for x in value]
    if isinstance(value, dict):
        return {repr(k): canonical(x, depth + 1) for k, x in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(repr(canonical(x, depth + 1)) for x in value)
    return repr(value)


# ------------------------------------------------------------------------------------------ the child side


def _child(source: str, calls: list[str], start: int, channel: int) -> None:
    """Load the candidate, evaluate calls[start:], write one JSON line per step to ``channel``; never returns."""
    write, dumps, exit_now = os.write, json.dumps, os._exit  # kept before the candidate can replace them
    stdout, stderr = sys.stdout, sys.stderr
    out_write, err_write = stdout.write, stderr.write

    def send(record: dict) -> None:
        write(channel, (dumps(record) + "\n").encode())

    def tampering() -> list[str]:
        seen = []
        if sys.stdout is not stdout or sys.stdout.write != out_write:
            seen.append("replaced sys.stdout")
        if sys.stderr is not stderr or sys.stderr.write != err_write:
            seen.append("replaced sys.stderr")
        if atexit._ncallbacks():
            seen.append("registered exit hooks")
        return seen

    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(source, "candidate.py", "exec"), namespace)
    except BaseException as exc:
        send({"loaded": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}", "tampering": tampering()})
        exit_now(0)
    send({"loaded": True, "tampering": tampering()})
    for i in range(start, len(calls)):
        try:
            record = {"i": i, "ok": True, "value": dumps(canonical(eval(calls[i], namespace)), sort_keys=True)}
        except BaseException as exc:
            record = {"i": i, "ok": False, "error": type(exc).__name__}
        send(record)
    send({"done": True, "tampering": tampering()})
    exit_now(0)


def _spawn(source: str, calls: list[str], start: int) -> tuple[int, int, int]:
    """Fork a loader child; return its pid, the result pipe's and the capture pipe's read ends."""
    result_read, result_write = os.pipe()
    capture_read, capture_write = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.setpgid(0, 0)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(capture_write, 1)
            os.dup2(capture_write, 2)
            channel = os.dup2(result_write, 3)
            os.closerange(4, os.sysconf("SC_OPEN_MAX"))
            _child(source, calls, start, channel)
        finally:
            os._exit(70)
    os.close(result_write)
    os.close(capture_write)
    return pid, result_read, capture_read


class _Loader:
    """One child, read with deadlines: records arrive line by line, the captured output is drained beside them."""

    def __init__(self, source: str, calls: list[str], start: int) -> None:
        self.pid, self.results, self.capture = _spawn(source, calls, start)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.results, selectors.EVENT_READ)
        self.selector.register(self.capture, selectors.EVENT_READ)
        self.pending = b""
        self.captured = b""
        self.open = {self.results, self.capture}
        self.ended = ""  # how the child ended, once reaped: "exit code N" or a signal's name

    def reap(self) -> str:
        """Wait for the child (it closed its result pipe, so it is ending) and say how it ended."""
        if not self.ended:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                return "gone"
            if os.WIFSIGNALED(status):
                self.ended = signal.Signals(os.WTERMSIG(status)).name
            else:
                self.ended = f"exit code {os.waitstatus_to_exitcode(status)}"
        return self.ended

    def next_record(self, seconds: float):
        """The next record, "timeout", or None when the child closed its result pipe."""
        deadline = time.monotonic() + seconds
        while b"\n" not in self.pending:
            if self.results not in self.open:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            for key, _ in self.selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    self.selector.unregister(key.fd)
                    self.open.discard(key.fd)
                elif key.fd == self.capture:
                    self.captured = (self.captured + chunk)[:CAPTURE_KEPT]
                else:
                    self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        try:
            record = json.loads(line)
        except ValueError:
            return {"malformed": True}
        return record if isinstance(record, dict) else {"malformed": True}

    def close(self) -> str:
        """Kill what is left of the child's group, reap it, and return its captured output."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        self.reap()
        while self.capture in self.open:  # the rest of the output, up to what the capture keeps
            if not self.selector.select(0.05):
                break
            chunk = os.read(self.capture, 65536)
            if not chunk:
                break
            self.captured = (self.captured + chunk)[:CAPTURE_KEPT]
        self.selector.close()
        os.close(self.results)
        os.close(self.capture)
        return self.captured.decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------------ the harness side


class Harness:
    def __init__(self, spec: dict, source: str) -> None:
        self.spec, self.source = spec, source
        self.calls: list[str] = spec["calls"]
        self.prefix = MARKER + spec["nonce"] + " "
        self.tampering: list[str] = []
        self.load_error = ""

    def emit(self, record: dict) -> None:
        sys.stdout.write(self.prefix + json.dumps(record) + "\n")
        sys.stdout.flush()

    def note(self, what: str) -> None:
        if what not in self.tampering:
            self.tampering.append(what)

    def run(self) -> None:
        start = 0
        while start < len(self.calls):
            start = self.one_loader(start)
            if start < 0:
                break
        self.emit({"done": True, "tampering": self.tampering, "load_error": self.load_error})

    def one_loader(self, start: int) -> int:
        """Run calls from ``start`` in one child; return where the next child starts, or -1 to stop."""
        loader = _Loader(self.source, self.calls, start)
        try:
            return self.read_loader(loader, start)
        finally:
            captured = loader.close()
            if any(hint in captured for hint in FORGERY_HINTS):
                self.note("printed text that looks like result records")
            reap_orphans()

    def ended_early(self, loader: _Loader, when: str) -> str:
        """A child that stopped without reporting: killed by a limit (a signal), or it left on its own, which is
        what a candidate that forges results and exits does."""
        ended = loader.reap()
        if ended.startswith("exit code"):
            self.note(f"exited before reporting ({when}, {ended})")
        return f"exited {when} ({ended})"

    def read_loader(self, loader: _Loader, start: int) -> int:
        first = loader.next_record(self.spec["load_seconds"])
        if first == "timeout":
            self.load_error = f"timeout while loading ({self.spec['load_seconds']:g} s)"
            return -1
        if first is None:
            self.load_error = self.ended_early(loader, "while loading")
            return -1
        if "loaded" not in first:
            self.note("wrote to the result channel itself")
            return -1
        for what in first.get("tampering", []):
            self.note(str(what))
        if not first["loaded"]:
            self.load_error = str(first.get("error", "failed to load"))[:300]
            return -1
        for i in range(start, len(self.calls)):
            record = loader.next_record(self.spec["seconds_per_test"])
            if record == "timeout":
                self.emit({"i": i, "ok": False, "error": "TimeoutError"})
                return i + 1
            if record is None:
                self.emit({"i": i, "ok": False, "error": self.ended_early(loader, f"during test {i}")})
                return i + 1
            if record.get("i") != i or "ok" not in record:
                self.note("wrote to the result channel itself")
                return -1
            value = record.get("value")
            if record["ok"] and isinstance(value, str):
                self.emit({"i": i, "ok": True, "value": value})
            else:
                self.emit({"i": i, "ok": False, "error": str(record.get("error", "error"))[:100]})
        last = loader.next_record(self.spec["seconds_per_test"])
        if isinstance(last, dict):
            for what in last.get("tampering", []):
                self.note(str(what))
        return len(self.calls)


def reap_orphans() -> None:
    """As PID 1 the harness inherits the candidate's orphans: reap them so they stop counting against its limit."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> None:
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace, no /proc/1/fd or /proc/1/mem for the candidate
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # PID 1 ignores default-handled signals from its namespace
    with open("tests.json") as fh:
        spec = json.load(fh)
    with open("candidate.py", encoding="utf-8", errors="surrogateescape") as fh:
        source = fh.read()
    os.unlink("tests.json")
    Harness(spec, source).run()


if __name__ == "__main__":
    main()

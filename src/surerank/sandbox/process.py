"""Run an untrusted program in a separate, limited process and say what happened to it.

Generated code is hostile until shown otherwise: an infinite loop, a fork bomb, a memory bomb, a 10 GB write, a
read of the caller's secrets, a write outside its folder, a network call.  Each run gets

- a process of its own in new mount, network and PID namespaces (``unshare``): every mount read-only, an empty
  size-limited tmpfs as its working directory, no network interface but a down loopback, no host process
  visible;
- ``nobody``'s identity when the caller is root (so the process-count limit applies and nothing root-owned is
  writable);
- CPU-time, address-space, file-size, open-file and process-count limits (``setrlimit``);
- a clean environment (nothing of the caller's is inherited) and an isolated interpreter (``python -I``);
- a wall-clock deadline, after which the whole process tree is killed.

Where namespaces are unavailable (no ``unshare``, or the kernel refuses them) nothing is silently weakened:
:class:`Sandbox` refuses to run unless the caller asked for ``isolation="limits-only"``, and every result says
which isolation it ran under.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from surerank.errors import InputError, SureRankError

logger = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("_launcher.py")
SETUP_FAILED = 125
NOBODY_UID = 65534
Status = Literal["ok", "error", "timeout", "cpu_limit", "memory_limit", "file_limit", "killed", "output_limit"]


class SandboxUnavailableError(SureRankError):
    """The requested isolation cannot be had on this machine."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits.  The defaults suit a unit-test-sized program (HumanEval and the like)."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_bytes: int = 512 * 2**20
    file_bytes: int = 16 * 2**20  # largest file the program may write (RLIMIT_FSIZE)
    work_bytes: int = 32 * 2**20  # size of its tmpfs working directory
    processes: int = 16  # processes (threads count too) beyond those the identity already runs
    open_files: int = 64
    output_bytes: int = 1 * 2**20  # stdout/stderr kept per stream; the rest is read and dropped

    def __post_init__(self) -> None:
        for name in ("wall_seconds", "cpu_seconds", "memory_bytes", "file_bytes", "work_bytes", "processes",
                     "open_files", "output_bytes"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise InputError(f"limits.{name}: must be a positive number, got {value!r}")


@dataclass
class RunResult:
    """What happened to one program: its status, outputs (capped), and how it was contained."""

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    wall_seconds: float
    isolation: str
    detail: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Sandbox:
    """Runs programs under :class:`Limits`.

    ``isolation``: ``"namespaces"`` (the default) needs ``unshare`` and refuses to run without it;
    ``"limits-only"`` runs with resource limits, a clean environment and a temporary folder but can neither hide
    the network nor make the rest of the file system read-only — every result says so.
    """

    limits: Limits = field(default_factory=Limits)
    isolation: Literal["namespaces", "limits-only"] = "namespaces"
    python: str | None = None  # default: this interpreter, or the system's when nobody cannot run this one
    max_parallel: int = max(1, (os.cpu_count() or 1))

    def __post_init__(self) -> None:
        if self.isolation not in ("namespaces", "limits-only"):
            raise InputError(f"isolation: must be 'namespaces' or 'limits-only', got {self.isolation!r}")
        self._drop_to = NOBODY_UID if os.geteuid() == 0 else None
        self.python = self.python or _interpreter_for(self._drop_to)
        if self._drop_to is not None and not _world_executable(self.python):
            raise SandboxUnavailableError(
                f"python: {self.python} cannot be run by the unprivileged user the sandbox drops to (uid "
                f"{self._drop_to}); pass python= a world-readable interpreter such as /usr/bin/python3"
            )
        self._unshare = shutil.which("unshare")
        if self.isolation == "namespaces":
            problem = self._namespaces_problem()
            if problem:
                raise SandboxUnavailableError(
                    f"isolation='namespaces' is not available here ({problem}); pass isolation='limits-only' to "
                    "run with resource limits only (no network or file-system isolation)"
                )

    def _namespaces_problem(self) -> str:
        if not sys.platform.startswith("linux"):
            return f"needs Linux, this is {sys.platform}"
        if self._unshare is None:
            return "the 'unshare' command (util-linux) is not installed"
        probe = subprocess.run([self._unshare, *self._unshare_flags(), "true"], capture_output=True, timeout=30)
        if probe.returncode != 0:
            return f"unshare refused: {probe.stderr.decode(errors='replace').strip()}"
        return ""

    def _unshare_flags(self) -> list[str]:
        flags = ["--mount", "--net", "--pid", "--fork", "--kill-child"]
        if os.geteuid() != 0:
            flags.append("--map-root-user")
        return flags

    # ------------------------------------------------------------------------------------------------ run

    def run_python(self, source: str, stdin: str = "", files: Mapping[str, str] | None = None) -> RunResult:
        """Run ``source`` as ``main.py`` in an empty working directory (plus ``files``), feeding ``stdin``."""
        programs = {"main.py": source, **(files or {})}
        return self._run([self.python, "-I", "main.py"], programs, stdin)

    def run_many(self, sources: Sequence[str], stdin: str = "",
                 files: Sequence[Mapping[str, str]] | None = None) -> list[RunResult]:
        """Run several programs side by side (``files[i]`` beside program i); one program's fate never touches
        another's result."""
        if files is not None and len(files) != len(sources):
            raise InputError(f"files: {len(files)} file sets for {len(sources)} programs")
        extra = files if files is not None else [None] * len(sources)
        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            return list(pool.map(lambda pair: self.run_python(pair[0], stdin, pair[1]), zip(sources, extra)))

    def _run(self, argv: list[str], files: Mapping[str, str], stdin: str) -> RunResult:
        limits = self.limits
        control = Path(tempfile.mkdtemp(prefix="surerank-sbx-ctl-"))
        workdir = Path(tempfile.mkdtemp(prefix="surerank-sbx-work-"))
        namespaces = self.isolation == "namespaces"
        drop = self._drop_to
        spec = {
            "workdir": str(workdir),
            "isolate_filesystem": namespaces,
            "work_bytes": limits.work_bytes,
            "files": dict(files),
            "drop_to_uid": drop,
            "cpu_seconds": int(limits.cpu_seconds),
            "memory_bytes": int(limits.memory_bytes),
            "file_bytes": int(limits.file_bytes),
            "open_files": int(limits.open_files),
            "nproc": _nproc_limit(drop, limits.processes),
            "argv": argv,
            "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(workdir),
                    "TMPDIR": str(workdir), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"},
        }
        if not namespaces and drop is not None:
            os.chmod(workdir, 0o777)
        spec_path = control / "spec.json"
        spec_path.write_text(json.dumps(spec))
        os.chmod(control, 0o755)
        os.chmod(spec_path, 0o644)
        command = [self.python, "-I", str(LAUNCHER), str(spec_path)]
        if namespaces:
            command = [self._unshare, *self._unshare_flags(), *command]
        # killed with us: a sandbox orphaned by a crashed caller would otherwise outlive its wall clock
        command = [sys.executable, "-I", str(LAUNCHER), "--die-with-parent", str(os.getpid()), *command]
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=str(workdir), env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                start_new_session=True, close_fds=True,
            )
            out, err = _CappedReader(proc.stdout, limits.output_bytes), _CappedReader(proc.stderr, limits.output_bytes)
            _feed(proc, stdin)
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_tree(proc)
                proc.wait()
            out.join(), err.join()
            elapsed = time.monotonic() - started
        finally:
            shutil.rmtree(control, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
        stderr_text = err.text()
        if proc.returncode == SETUP_FAILED and "SANDBOX-SETUP:" in stderr_text:
            raise SandboxUnavailableError(stderr_text.strip())
        status, detail = _classify(proc.returncode, timed_out, stderr_text, limits)
        return RunResult(
            status=status, returncode=proc.returncode, stdout=out.text(), stderr=stderr_text,
            wall_seconds=elapsed, isolation=self.isolation, detail=detail,
            stdout_truncated=out.truncated, stderr_truncated=err.truncated,
        )


def _world_executable(path: str) -> bool:
    """Can a user with no special rights run ``path`` (every folder on the way traversable, the file o+x)?"""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & 0o001:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in real.parents)
    except OSError:
        return False


def _interpreter_for(uid: int | None) -> str:
    """This interpreter when the sandbox keeps the caller's identity; else the first one ``nobody`` can run."""
    if uid is None:
        return sys.executable
    candidates = [sys.executable, getattr(sys, "_base_executable", ""),
                  shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or ""]
    for candidate in candidates:
        if candidate and _world_executable(candidate):
            return candidate
    return sys.executable  # refused in __post_init__ with a message naming the python option


def _nproc_limit(uid: int | None, extra: int) -> int | None:
    """RLIMIT_NPROC counts every process of the identity; allow what it runs already plus ``extra``."""
    target = os.geteuid() if uid is None else uid
    if target == 0:
        return None  # root ignores RLIMIT_NPROC; the PID namespace and the wall clock bound it instead
    running = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == target:
                    running += 1
            except OSError:
                continue
    return running + extra


def _feed(proc: subprocess.Popen, stdin: str) -> None:
    def write() -> None:
        try:
            if stdin:
                proc.stdin.write(stdin.encode())
            proc.stdin.close()
        except OSError:  # the program exited or closed its stdin first
            pass

    threading.Thread(target=write, daemon=True).start()


class _CappedReader:
    """Drains a pipe on a thread, keeping the first ``cap`` bytes: a program printing forever cannot fill memory."""

    def __init__(self, pipe, cap: int) -> None:
        self._pipe, self._cap = pipe, cap
        self._chunks: list[bytes] = []
        self._kept = 0
        self.truncated = False
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while chunk := self._pipe.read(65536):
            room = self._cap - self._kept
            if room > 0:
                self._chunks.append(chunk[:room])
                self._kept += min(room, len(chunk))
            if len(chunk) > room:
                self.truncated = True
        self._pipe.close()

    def join(self) -> None:
        self._thread.join(timeout=5)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", errors="replace")


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the session: with --kill-child the PID namespace's init dies and takes every descendant with it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _classify(returncode: int | None, timed_out: bool, stderr: str, limits: Limits) -> tuple[Status, str]:
    if timed_out:
        return "timeout", f"killed after the wall-clock limit of {limits.wall_seconds:g} s"
    if returncode == 0:
        return "ok", ""
    if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGKILL) and (
        "MemoryError" not in stderr
    ):
        if returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            return "cpu_limit", f"killed at the CPU-time limit of {limits.cpu_seconds} s"
        return "killed", "killed (SIGKILL)"
    if returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ) or "File too large" in stderr:
        return "file_limit", f"a write passed the file-size limit of {limits.file_bytes} bytes"
    if "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        return "memory_limit", f"ran out of its memory limit of {limits.memory_bytes} bytes"
    last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {returncode}"
    return "error", last[:500]

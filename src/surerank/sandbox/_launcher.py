"""Runs inside the sandbox's namespaces, before the untrusted program: isolate, limit, then exec.

Started by :class:`surerank.sandbox.process.Sandbox` as ``python -I _launcher.py SPEC.json`` under
``unshare --mount --net --pid --fork --kill-child [--map-root-user]``, itself started through
``_launcher.py --die-with-parent PID ...`` so that the whole chain is killed if the caller dies.  Standalone on
purpose (standard library only, no surerank import): it runs with an isolated interpreter and must not depend on
the caller's packages.

Steps: every mount is made read-only in this private mount namespace; a size-limited tmpfs becomes the empty
working directory; ``/proc`` is remounted for the new PID namespace (so no host process, and no host
environment, is visible); privileges are dropped to ``nobody`` when the host user is root; resource limits are
set; the program is exec'd with a clean environment.  Any step that fails is reported on stderr with the
prefix ``SANDBOX-SETUP:`` and exit code 125, so the caller never mistakes a broken sandbox for a program error.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
SETUP_FAILED = 125


def _fail(message: str) -> None:
    sys.stderr.write(f"SANDBOX-SETUP: {message}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


def _mount(libc: ctypes.CDLL, source: str, target: str, fstype: str | None, flags: int, data: str | None) -> int:
    rc = libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                    data.encode() if data else None)
    return 0 if rc == 0 else ctypes.get_errno()


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            points.append(fields[4].replace("\\040", " "))
    return points


def _isolate_filesystem(libc: ctypes.CDLL, workdir: str, work_bytes: int) -> None:
    _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE, None)
    for point in sorted(set(_mount_points()), key=len):
        if point.startswith(("/proc", "/sys")):
            continue
        err = _mount(libc, point, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, None)
        if err and point == "/":
            _fail(f"cannot make / read-only (errno {err})")
    err = _mount(libc, "tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={work_bytes},mode=0777")
    if err:
        _fail(f"cannot mount the working directory {workdir} (errno {err})")
    err = _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV, None)
    if err:
        _fail(f"cannot mount /proc for the PID namespace (errno {err})")
    probe = os.path.join("/", f".surerank-sandbox-probe-{os.getpid()}")
    try:
        with open(probe, "w"):
            pass
    except OSError:
        return
    os.unlink(probe)
    _fail("the file system is still writable after remounting it read-only")


def _set_limits(spec: dict) -> None:
    limits = [
        (resource.RLIMIT_CPU, spec["cpu_seconds"], spec["cpu_seconds"] + 1),
        (resource.RLIMIT_AS, spec["memory_bytes"], spec["memory_bytes"]),
        (resource.RLIMIT_FSIZE, spec["file_bytes"], spec["file_bytes"]),
        (resource.RLIMIT_NOFILE, spec["open_files"], spec["open_files"]),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if spec.get("nproc") is not None:
        limits.append((resource.RLIMIT_NPROC, spec["nproc"], spec["nproc"]))
    for which, soft, hard in limits:
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError) as exc:
            _fail(f"cannot set resource limit {which}: {exc}")


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, argv: list[str]) -> None:
    """Exec ``argv`` so that it is killed when the caller dies: an orphaned sandbox must not outlive its wall clock."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        _fail(f"cannot set the parent-death signal (errno {ctypes.get_errno()})")
    if os.getppid() != parent:  # the caller died before the signal was armed
        os._exit(SETUP_FAILED)
    os.execv(argv[0], argv)


def main() -> None:
    if sys.argv[1] == "--die-with-parent":
        die_with_parent(int(sys.argv[2]), sys.argv[3:])
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    libc = ctypes.CDLL(None, use_errno=True)
    workdir = spec["workdir"]
    if spec["isolate_filesystem"]:
        _isolate_filesystem(libc, workdir, spec["work_bytes"])
    for name, content in spec["files"].items():
        with open(os.path.join(workdir, name), "w") as fh:
            fh.write(content)
    if spec["drop_to_uid"] is not None:
        uid = gid = spec["drop_to_uid"]
        os.chown(workdir, uid, gid)
        for name in spec["files"]:
            os.chown(os.path.join(workdir, name), uid, gid)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        # a change of identity clears the parent-death signal unshare --kill-child armed: arm it again
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            _fail(f"cannot set the parent-death signal (errno {ctypes.get_errno()})")
    os.chdir(workdir)
    _set_limits(spec)
    os.execve(spec["argv"][0], spec["argv"], spec["env"])


if __name__ == "__main__":
    main()

"""The sandbox's own steps around an untrusted program: standard library only, no surerank import.

It runs in two places, so it must not depend on the caller's packages:

- ``python -I _launcher.py --die-with-parent PID [--as-uid UID] -- ARGV...`` on the host, as the caller: arms a
  parent-death signal (a crashed caller leaves nothing running), takes the run's own identity when the caller is
  root (a uid no other run and no file has, so the process-count limit is this run's alone), then execs the
  isolation tool (``unshare`` or ``bwrap``) in ARGV.
- ``python -I -c SOURCE SPEC_FD STATUS_FD`` inside the new namespaces, as the sandbox user: with ``unshare`` it
  first builds the new root itself (``bwrap`` builds it before starting us): a read-only tmpfs holding only the
  interpreter's installation and the system libraries (read-only binds), a few device nodes, a fresh ``/proc``
  and an empty size-limited tmpfs ``/sandbox``; nothing else of the host.  Then it writes the program's files,
  drops every capability, sets the resource limits, says "ready" on STATUS_FD and execs the program with a clean
  environment.

Any step that fails is reported on stderr with the prefix ``SANDBOX-SETUP:`` and exit code 125; a run whose
STATUS_FD never said "ready" failed to start, so the caller never mistakes a broken sandbox for a program error.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import signal
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SETUP_FAILED = 125
# pivot_root has no libc wrapper: its syscall number per architecture
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217, "armv7l": 218, "i686": 217}
# statvfs flags -> mount flags: a read-only remount in a user namespace must keep the flags the host locked
STATVFS_TO_MS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                 (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))
DEVICES = ("null", "zero", "full", "random", "urandom")


def fail(message: str) -> None:
    sys.stderr.write(f"SANDBOX-SETUP: {message}\n")
    sys.stderr.flush()
    os._exit(SETUP_FAILED)


class Mounts:
    """mount(2) and friends through ctypes, each failure fatal and named."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        rc = self.libc.mount(source.encode() if source else None, target.encode(),
                             fstype.encode() if fstype else None, flags, data.encode() if data else None)
        if rc != 0:
            fail(f"mount {source or ''} on {target} failed: {os.strerror(ctypes.get_errno())}")

    def remount_read_only(self, target: str, extra: int = 0) -> None:
        kept = sum(ms for st, ms in STATVFS_TO_MS if os.statvfs(target).f_flag & st)
        self.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | kept | extra)

    def pivot_into(self, root: str) -> None:
        number = PIVOT_ROOT.get(platform.machine())
        if number is None:
            fail(f"pivot_root: no syscall number known for {platform.machine()}")
        os.chdir(root)
        if self.libc.syscall(number, b".", b".") != 0:
            fail(f"pivot_root failed: {os.strerror(ctypes.get_errno())}")
        if self.libc.umount2(b".", MNT_DETACH) != 0:
            fail(f"detaching the host's root failed: {os.strerror(ctypes.get_errno())}")
        os.chdir("/")


def _mount_points_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4].replace("\\040", " ") for line in fh]
    return sorted(p for p in points if p == path or p.startswith(path.rstrip("/") + "/"))


def _make_target(path: str, like: str) -> None:
    if os.path.isdir(like):
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()


def build_root(spec: dict) -> None:
    """The ``unshare`` path's new root: what ``bwrap`` builds from the same spec (see process.py's bwrap_argv)."""
    m = Mounts()
    root = spec["mountpoint"]
    m.mount(None, "/", None, MS_REC | MS_PRIVATE)
    m.mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for source, dest in spec["binds"]:
        target = root + dest
        _make_target(target, source)
        m.mount(source, target, None, MS_BIND | MS_REC)
        for point in reversed(_mount_points_under(target)):  # submounts too: every bound path read-only
            m.remount_read_only(point)
    for link_target, link in spec["symlinks"]:
        os.makedirs(os.path.dirname(root + link), exist_ok=True)
        os.symlink(link_target, root + link)
    dev = root + "/dev"
    os.makedirs(dev)
    m.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for name in DEVICES:
        open(f"{dev}/{name}", "a").close()
        m.mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    for name, link_target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                              ("stderr", "/proc/self/fd/2")):
        os.symlink(link_target, f"{dev}/{name}")
    os.makedirs(f"{dev}/shm")
    m.mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={spec['shm_bytes']},mode=1777")
    m.mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    os.makedirs(root + "/proc")
    m.mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    workdir = root + spec["workdir"]
    os.makedirs(workdir)
    m.mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['work_bytes']},mode=0700")
    m.mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    m.pivot_into(root)


def set_limits(spec: dict) -> None:
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
            fail(f"cannot set resource limit {which}: {exc}")


def drop_privileges(spec: dict) -> None:
    """No capability survives the exec, and none can be regained through a set-uid or file-capability binary."""
    libc = ctypes.CDLL(None, use_errno=True)
    if spec.get("as_uid") is not None:  # limits-only as root: this run's own uid (namespace runs got it earlier)
        take_identity(spec["as_uid"])
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # fails harmlessly on kernels without ambient caps
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail(f"cannot set no_new_privs (errno {ctypes.get_errno()})")


def take_identity(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def run_inside(spec_fd: int, status_fd: int) -> None:
    with os.fdopen(spec_fd) as fh:
        spec = json.load(fh)
    if spec["build_root"]:
        build_root(spec)
    workdir = spec["workdir"]
    try:
        for name, content in spec["files"].items():  # a lone surrogate is written as is: the program's own fault
            with open(os.path.join(workdir, name), "w", encoding="utf-8", errors="surrogatepass") as fh:
                fh.write(content)
    except OSError as exc:  # larger than the working directory: this program's failure, not the sandbox's
        os.write(status_fd, b"ready\n")
        sys.stderr.write(f"cannot write the program's files into {workdir}: {exc}\n")
        os._exit(126)
    if spec.get("as_uid") is not None:
        os.chmod(workdir, 0o700)
        for path in [workdir, *(os.path.join(workdir, name) for name in spec["files"])]:
            os.chown(path, spec["as_uid"], spec["as_uid"])
    drop_privileges(spec)
    os.chdir(workdir)
    set_limits(spec)
    os.write(status_fd, b"ready\n")
    os.close(status_fd)
    try:
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as exc:
        sys.stderr.write(f"cannot start {spec['argv'][0]}: {exc}\n")
        os._exit(127)


def die_with_parent(argv: list[str]) -> None:
    """Exec the isolation tool so that it is killed when the caller dies, as the run's own uid when given one."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = int(argv[0])
    rest = argv[1:]
    if rest[0] == "--as-uid":
        take_identity(int(rest[1]))  # a change of identity clears the parent-death signal: armed after it
        rest = rest[2:]
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        fail(f"cannot set the parent-death signal (errno {ctypes.get_errno()})")
    if os.getppid() != parent:  # the caller died before the signal was armed
        os._exit(SETUP_FAILED)
    command = rest[1:] if rest[0] == "--" else rest
    os.execv(command[0], command)


def main() -> None:
    if sys.argv[1] == "--die-with-parent":
        die_with_parent(sys.argv[2:])
    run_inside(int(sys.argv[1]), int(sys.argv[2]))


if __name__ == "__main__":
    main()

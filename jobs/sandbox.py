"""The sandbox a volunteer's agent runs each job in: an unprivileged user, a fresh folder, no network, limits.

`Sandbox.wrap(command, workdir)` gives the command line that runs `command` so that:
- it runs as an unprivileged user (`nobody`), with no way to gain privileges back (no_new_privs);
- it has a network namespace of its own with no interface up: no socket reaches any address, the portal's
  included (the agent, outside the sandbox, does all the talking: inputs in, log and outputs out);
- it has a mount namespace of its own: home folders, /tmp, /run, the agent's own folder (its credential, its cache)
  and anything else named in `hide` are covered by empty read-only folders; the Python that runs the job (its
  prefix, site-packages and the observatory's code) is put back read-only; the job's folder is the one place it
  may write;
- it has a PID namespace of its own with a fresh /proc: it sees no other process on the machine;
- its data memory, file size, open files and processes are limited (setrlimit); the agent stops it at the unit's
  time limit.

It needs root (the agent drops to `nobody` for each job) and a kernel that allows namespaces. `problem()` says in
one line why it cannot run here, or None. `python -m jobs.sandbox SPEC -- COMMAND…` is the part that runs inside
the new namespaces: it sets up the mounts, forks the job as `nobody` and passes signals on to it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import resource
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

NOBODY = 65534
HIDDEN_BY_DEFAULT = ("/root", "/home", "/tmp", "/var/tmp", "/dev/shm", "/run", "/mnt", "/media", "/srv")
# What a job's environment keeps of the agent's: the rest (tokens, paths, proxies, anything secret) stays outside.
KEPT_ENVIRONMENT = ("LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS", "TORCH_NUM_THREADS")

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 38, 1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def runtime_paths() -> list[str]:
    """What the job's Python needs to read: its prefixes, its import path and the observatory's own code."""
    import jobs

    paths = {sys.base_prefix, sys.prefix, str(Path(jobs.__file__).resolve().parent.parent)}
    paths.update(entry for entry in sys.path if entry and os.path.isdir(entry))
    return sorted({str(Path(p).resolve()) for p in paths})


@dataclass
class Sandbox:
    """How a job is shut in. `hide`: folders the job must not see beyond the defaults (the agent's folder);
    `memory_gb`: its data memory; `file_gb`: the largest file it may write."""

    hide: list[str] = field(default_factory=list)
    memory_gb: float = 16.0
    file_gb: float = 8.0
    processes: int = 512
    uid: int = NOBODY
    gid: int = NOBODY

    def wrap(self, command: list[str], workdir: Path) -> list[str]:
        """The command line that runs `command` in this sandbox, writing only to `workdir`."""
        spec = {**asdict(self), "workdir": str(workdir.resolve()), "keep": runtime_paths(),
                "hide": [str(Path(path).resolve()) for path in self.hide]}
        return [sys.executable, "-m", "jobs.sandbox", json.dumps(spec), "--", *command]

    def prepare(self, workdir: Path) -> None:
        """Give the job's folder to the sandbox's user (what the agent put in it stays the agent's: readable, not
        writable); the agent, as root, still reads everything the job writes."""
        for root, _dirs, files in os.walk(workdir):
            for name in files:
                os.chmod(os.path.join(root, name), 0o444, follow_symlinks=False)
            os.chmod(root, 0o755)
        os.chown(workdir, self.uid, self.gid)
        os.chmod(workdir, 0o700)

    @staticmethod
    def environment(workdir: Path, base: dict[str, str]) -> dict[str, str]:
        env = {key: base[key] for key in KEPT_ENVIRONMENT if key in base}
        return {**env, "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}


def problem() -> str | None:
    """Why no job can be sandboxed on this machine (in one line), or None when it can."""
    if sys.platform != "linux":
        return "the sandbox needs Linux namespaces"
    if os.geteuid() != 0:
        return ("the sandbox needs root: start the agent with sudo (each job still runs as the unprivileged user "
                "nobody)")
    pid = os.fork()
    if pid == 0:  # try in a child: namespaces once entered cannot be left
        try:
            _check(_libc().unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
            os._exit(0)
        except OSError:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return "this kernel (or container) does not allow new mount, network and PID namespaces"
    return None


# -- inside the namespaces


def _encode(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    _check(libc.mount(_encode(source), _encode(target), _encode(fstype), ctypes.c_ulong(flags), _encode(data)),
           f"mount {target}")


def _under(path: str, parents: list[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in parents)


def _hide(libc: ctypes.CDLL, paths: list[str], covered: list[str]) -> None:
    """An empty folder (read-only once sealed) over each path that still shows: one inside a folder covered
    before is gone already, unless it was put back."""
    for path in sorted(set(paths), key=len):
        if not os.path.isdir(path):
            continue
        _mount(libc, "tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
        covered.append(path)


def _bind(libc: ctypes.CDLL, source: str, target: str, *, writable: bool) -> None:
    os.makedirs(target, exist_ok=True)
    _mount(libc, source, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (0 if writable else MS_RDONLY)
    _mount(libc, None, target, None, flags)


def _seal_tmpfs(libc: ctypes.CDLL, covered: list[str]) -> None:
    for path in covered:  # the folders made for put-back paths are in place: the covers become read-only
        _mount(libc, None, path, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755")


def _limit(spec: dict) -> None:
    gib = 1 << 30
    for which, value in ((resource.RLIMIT_DATA, int(spec["memory_gb"] * gib)),
                         (resource.RLIMIT_FSIZE, int(spec["file_gb"] * gib)),
                         (resource.RLIMIT_NPROC, int(spec["processes"])), (resource.RLIMIT_NOFILE, 4096),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))


STAGING = "/run"  # covered anyway: what is put back waits there while the rest is covered


def _enter(spec: dict, command: list[str]) -> int:
    libc = _libc()
    workdir = spec["workdir"]
    os.umask(0o022)  # the folders made for what is put back must be open to the job's user (the agent's may be 077)
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID), "unshare")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here shows outside
    keep = [path for path in spec["keep"] if os.path.isdir(path) and not _under(path, [STAGING])]
    # What is put back is held in a staging folder before its own place is covered.
    _mount(libc, "tmpfs", STAGING, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700,size=64k")
    staged = {}
    for index, path in enumerate([*keep, workdir]):
        staged[path] = f"{STAGING}/{index}"
        _bind(libc, path, staged[path], writable=path == workdir)
    covered: list[str] = []
    _hide(libc, [p for p in HIDDEN_BY_DEFAULT if p != STAGING] + [str(Path.home())], covered)
    for path in keep:
        if not os.path.isdir(path):  # covered: put back, read-only
            _bind(libc, staged[path], path, writable=False)
    _hide(libc, list(spec["hide"]), covered)  # the agent's folder, even inside a path put back
    _bind(libc, staged[workdir], workdir, writable=True)
    _check(libc.umount2(STAGING.encode(), 2), "unmount the staging folder")  # MNT_DETACH
    _hide(libc, [STAGING], covered)
    _seal_tmpfs(libc, covered)
    child = os.fork()  # the first child is PID 1 of the new PID namespace
    if child == 0:
        return _init(libc, spec, command)
    return _forward_and_wait(child)


def _init(libc: ctypes.CDLL, spec: dict, command: list[str]) -> int:
    """PID 1 inside: a fresh /proc, then the job as its own process (PID 1 would ignore the signals it does not
    handle), signals passed on, the job's exit code returned. Killing the sandbox's outer process kills this one,
    and with PID 1 gone the kernel kills everything else inside."""
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    job = os.fork()
    if job == 0:
        try:
            os.chdir(spec["workdir"])
            _limit(spec)
            os.setgroups([])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
            _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
            os.umask(0o077)
            env = Sandbox.environment(Path(spec["workdir"]), dict(os.environ))
            os.execve(command[0], command, env)
        except OSError as exc:
            print(f"[sandbox] could not start the job: {exc}", file=sys.stderr, flush=True)
            os._exit(126)
    return _forward_and_wait(job)


def _forward_and_wait(child: int) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: os.kill(child, number))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        except InterruptedError:
            continue


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m jobs.sandbox SPEC -- COMMAND…", file=sys.stderr)
        return 2
    spec, command = json.loads(argv[0]), argv[2:]
    _check(_libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")  # the agent gone: the job too
    try:
        return _enter(spec, command)
    except OSError as exc:
        print(f"[sandbox] could not shut the job in: {exc}", file=sys.stderr, flush=True)
        return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

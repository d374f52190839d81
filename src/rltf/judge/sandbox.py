"""Operating-system isolation for the sandbox server and the program runners.

The server calls :func:`unshare_namespaces` once at start-up. Where the kernel allows it (Linux
with unprivileged user namespaces, or root) the server enters new user, mount, network, IPC and UTS
namespaces, and its first child (the zygote) becomes pid 1 of a new pid namespace. The zygote then
calls :func:`build_root`, which swaps the file system for a minimal read-only view: the Python
installation and system libraries, a fresh ``/proc`` and one small writable working directory.
The judge's own files (problems, expected outputs, the vendored datasets) are not in that view,
there is no network, and one ``kill(-1)`` from the zygote ends every process a program left behind.
Where namespaces are not available the server runs with resource limits only and says so in every
verdict's ``isolation`` field.

Each runner additionally enters a nested user namespace (:func:`drop_privileges`), which leaves it
without capabilities over the server's processes and memory.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import resource
import sys
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())

NEW_ROOT = "/tmp/.rltf-sandbox-root"
NOBODY = 65534
DEVICES = ("null", "zero", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class SandboxError(OSError):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SandboxError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def prctl(option: int, value: int) -> None:
    if _libc is not None:
        _libc.prctl(option, value, 0, 0, 0)


@dataclass(frozen=True)
class SandboxInfo:
    namespaces: bool
    description: str


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _bind_readonly(source: str, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    _mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID
    st = os.statvfs(target)  # locked flags of the original mount must be kept, or remount fails
    if st.f_flag & os.ST_NODEV:
        flags |= MS_NODEV
    if st.f_flag & os.ST_NOEXEC:
        flags |= MS_NOEXEC
    _mount(None, target, None, flags)


def _visible_paths(hidden: list[str]) -> list[str]:
    """Directories a Python program needs: system libraries and this interpreter's installation."""
    candidates = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc",
                  sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))]
    candidates += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    # a venv reached through a symlink (conda, pyenv, shared caches): the link alone is recreated,
    # so its target must be visible too, or the programs lose their third-party packages
    candidates += [os.path.realpath(p) for p in candidates if p]
    chosen: list[str] = []
    for path in sorted({os.path.abspath(p) for p in candidates if p and os.path.exists(p)}, key=len):
        if any(path == c or path.startswith(c + "/") for c in chosen):
            continue
        if any(path == h or path.startswith(h + "/") for h in hidden):
            continue
        chosen.append(path)
    return chosen


def build_root(info: SandboxInfo, hidden: list[str], job_dir: str, job_dir_mb: int) -> None:
    """Swap the mount namespace's file system for a read-only minimal view (run by pid 1).

    Only ``job_dir`` (a small tmpfs) is writable; ``/proc`` shows this pid namespace alone.
    The visible directories are opened first: once the process is the sandbox user it may not be
    allowed to walk to them (``/root`` is private), but it can still mount what it holds open.
    """
    visible = _visible_paths(hidden)
    links = {path: os.readlink(path) for path in visible if os.path.islink(path)}
    handles = {path: os.open(path, os.O_PATH) for path in visible if path not in links}
    become_sandbox_user(info)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    os.makedirs(NEW_ROOT, exist_ok=True)
    _mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path in visible:
        target = NEW_ROOT + path
        if path in links:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(links[path], target)
        else:
            handle = handles.pop(path)
            _bind_readonly(f"/proc/self/fd/{handle}", target)
            os.close(handle)
    for path in hidden:  # e.g. the package's own data inside a visible site-packages
        target = NEW_ROOT + path
        if os.path.isdir(target):
            _mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k")
    for name in ("proc", "tmp", "dev", job_dir.strip("/")):
        os.makedirs(f"{NEW_ROOT}/{name}", exist_ok=True)
    _mount("proc", f"{NEW_ROOT}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", NEW_ROOT + job_dir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={job_dir_mb}m,mode=1777")
    for dev in DEVICES:
        target = f"{NEW_ROOT}/dev/{dev}"
        open(target, "w").close()
        _mount(f"/dev/{dev}", target, None, MS_BIND)
    old_root = f"{NEW_ROOT}/.old-root"
    os.makedirs(old_root, exist_ok=True)
    _check(_libc.syscall(SYS_PIVOT_ROOT, NEW_ROOT.encode(), old_root.encode()), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old-root", MNT_DETACH), "umount old root")
    os.rmdir("/.old-root")
    _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)


def unshare_namespaces() -> SandboxInfo:
    """Put this (single-threaded) process in new user, mount, net, IPC and UTS namespaces.

    The new pid namespace applies to the children: the first one forked becomes its pid 1.
    Returns how the server is isolated; without namespaces it runs with resource limits only.
    """
    if _libc is None or SYS_PIVOT_ROOT is None:
        return SandboxInfo(False, f"rlimits only (no namespaces on {sys.platform}/{platform.machine()})")
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if uid == 0:
        # Root is exempt from RLIMIT_NPROC, so programs must run as someone else: ``nobody``.
        # Only a process outside the new namespace may map another uid, hence the helper; the
        # zygote switches to that uid with :func:`become_sandbox_user` once the mounts are done.
        go_r, go_w = os.pipe()
        helper = os.fork()
        if helper == 0:
            os.close(go_w)
            os.read(go_r, 1)
            parent = os.getppid()
            try:
                _write(f"/proc/{parent}/uid_map", f"0 {NOBODY} 1")
                _write(f"/proc/{parent}/gid_map", f"0 {NOBODY} 1")
            except OSError:
                os._exit(1)
            os._exit(0)
        os.close(go_r)
        unshared = _libc.unshare(flags) == 0
        err = ctypes.get_errno()
        os.write(go_w, b"x" if unshared else b"")
        os.close(go_w)
        mapped = os.waitpid(helper, 0)[1] == 0
        if not unshared:
            return SandboxInfo(False, f"rlimits only (namespaces unavailable: {os.strerror(err)})")
        if not mapped:
            raise SandboxError(errno.EPERM, "could not map the sandbox user")
    else:
        if _libc.unshare(flags) != 0:
            err = ctypes.get_errno()
            return SandboxInfo(False, f"rlimits only (namespaces unavailable: {os.strerror(err)})")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1")
        _write("/proc/self/gid_map", f"0 {gid} 1")
    return SandboxInfo(True, "namespaces(user,pid,net,mount,ipc,uts)+readonly-root+rlimits+nested-userns")


def become_sandbox_user(info: SandboxInfo) -> None:
    """Take the namespace's uid 0 for real (``nobody`` outside when the judge runs as root)."""
    if info.namespaces and os.getuid() != 0:
        with contextlib.suppress(PermissionError):
            os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)


def drop_privileges() -> bool:
    """Enter a nested user namespace so the runner holds no capabilities over the server."""
    return _libc is not None and _libc.unshare(CLONE_NEWUSER) == 0


@dataclass(frozen=True)
class Limits:
    cpu_s: float
    memory_mb: int
    max_processes: int
    max_file_mb: int
    max_open_files: int = 256


def apply_limits(limits: Limits) -> None:
    """Resource limits for a runner process; children inherit them."""
    cpu = max(1, int(limits.cpu_s + 0.999))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    size = limits.max_file_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

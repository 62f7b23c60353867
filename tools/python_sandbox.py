"""Run model-written Python in a child process with OS-level limits (the ``python`` tool).

Never ``eval`` in-process: each call starts a fresh interpreter (``python -S -s -c LAUNCHER``,
not ``-I``: the environment is built from scratch anyway, and ``PYTHONHASHSEED=0`` in it keeps
set/dict order, hence tool results, reproducible); the launcher reads the code from stdin,
sets up isolation and only then runs it as ``__main__`` (a final bare expression is printed,
as in a REPL). Setup reports on a private pipe, so a crash of the code is never mistaken for
a sandbox failure (`SandboxError`) or the other way round.

Isolation modes, probed once on first use (strongest that works and passes a self-check), see
`sandbox_info()`; ``AGENTOPD_SANDBOX_MODE=<mode>`` forces one:

- ``userns``  (Linux, user namespaces allowed; root or not) new user + mount + pid + network +
  ipc + uts namespaces, built by the launcher with unshare(2) and written uid maps (no
  setuid helpers, no `unshare` binary needed). As root the code runs as uid 65534 (nobody);
  as a normal user it runs as the user with every capability dropped.
- ``root-ns`` (root, user namespaces refused) the same namespaces without a user namespace; the
  code runs as uid 65534. The process-count limit is then shared by concurrent sandboxes.
- ``setuid``  (root, no namespaces: e.g. Docker's default seccomp) the code runs as uid 65534.
- ``rlimits`` (anything else) resource limits only. A warning is logged.

Guards (every mode): a wall-clock limit (the whole process group is SIGKILLed), CPU time
(RLIMIT_CPU), address space (RLIMIT_AS), file size (RLIMIT_FSIZE), open files (RLIMIT_NOFILE),
core dumps off; an environment built from scratch (the parent's variables, API keys included,
are not passed); a fresh working directory, deleted afterwards; stdout/stderr truncated, and
the run killed when it prints far too much; a seccomp filter under which ``socket(AF_UNIX)``
and ``io_uring_setup`` fail (EPERM) and only the native syscall ABI is allowed, so no host
socket reachable by path (D-Bus, X11, an SSH agent) can be connected to; ``socketpair`` works.
Guards (``userns``, ``root-ns``): no network (a new, empty network namespace: even 127.0.0.1 is
unreachable); every mount read-only (and nosuid) except the working directory and /dev/shm,
which are private size-limited tmpfs mounts; /root and the invoking user's home hidden behind
empty tmpfs mounts, and so are /tmp, /var/tmp, /run and /home, where host sockets live (the
interpreter and site-packages are bound back read-only); the working directory and HOME are
``/tmp/work`` whatever the host's temporary path; a private
/proc in a pid namespace whose init is the code, so the host's processes are invisible and
every process the code started (including ``setsid`` daemons) dies with it; a process limit
(RLIMIT_NPROC, counted per sandbox in ``userns``); no privilege: no capabilities, no_new_privs
(setuid binaries give nothing); nested user namespaces disabled in ``userns``.
Guards (``setuid``): host files are accessed as nobody (no writes to files it does not own,
but world-writable directories such as /tmp *are* writable); RLIMIT_NPROC (shared).
Processes left behind are killed by process group and by an environment marker.

Does not guard: host mount points listed in /proc/self/mountinfo; reading world-readable files (and, for a non-root user, that user's files
outside the hidden home directory); CPU and memory bandwidth (the code shares the machine);
kernel exploits; in ``setuid`` / ``rlimits``: the network, writes to writable host paths, and
processes that both leave the process group and scrub their environment; in ``rlimits`` for a
non-root user, RLIMIT_NPROC counts all of the user's processes (the limit is set to the current
count + ``max_procs``). Not a boundary against a determined attacker with a kernel bug: use a VM
(gVisor, Firecracker) for untrusted code at scale.
"""

from __future__ import annotations

import errno
import json
import logging
import marshal
import math
import os
import pwd
import re
import selectors
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agentopd.tools.core import SandboxFailure, ToolFailure, ToolTimeout

log = logging.getLogger(__name__)

MODES = ("userns", "root-ns", "setuid", "rlimits")
SANDBOX_UID = 65534  # nobody / nogroup
SETUP_FAILED = 125

# The launcher runs in the child interpreter before any model code. It reads its config (and
# the code) from stdin as JSON and reports on a private status pipe: "OK" when the code starts,
# "E<why>" when setup failed, then "S<signal>" / "X<exit code>" from the namespace's parent.
_LAUNCHER = r'''# agentopd-sandbox-launcher
import marshal, os, resource, signal, sys
cfg = marshal.loads(sys.stdin.buffer.read())
_n = os.open("/dev/null", os.O_RDONLY); os.dup2(_n, 0); os.close(_n)
STATUS = cfg["status_fd"]
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
import ctypes  # for the seccomp filter every mode installs (and namespaces, privileges)
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
MS_PRIVATE = 1 << 18
FLAGS = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048,
         "relatime": 1 << 21, "strictatime": 1 << 24}
NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = (
    0x20000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000)

def fail(msg):
    try:
        os.write(STATUS, ("E" + msg).encode())
    except OSError:  # the code had started: report like any crash
        os.write(2, ("sandbox launcher: " + msg + "\n").encode())
    finally:
        os._exit(125)

def ok(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, what + ": " + os.strerror(e))

def prctl(opt, a=0, b=0):
    ok(libc.prctl(ctypes.c_int(opt), ctypes.c_ulong(a), ctypes.c_ulong(b), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)), "prctl %d" % opt)

def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else os.fsencode(s)
    ok(libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)), "mount " + dst)

def unescape(p):
    return p.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")

def readonly_everything(keep):
    tops = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            tops[unescape(parts[4])] = parts[5].split(",")  # later lines are mounted on top
    for mp, opts in tops.items():
        if mp in keep:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        for o in opts:
            flags |= FLAGS.get(o, 0)
        try:
            mount(None, mp, None, flags)
        except OSError as e:
            if mp == "/" or e.errno not in (2, 13, 20):  # hidden or unreachable: fine
                raise

def drop_privileges():
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
    for cap in range(last + 1):
        try:
            prctl(24, cap)  # PR_CAPBSET_DROP
        except OSError:
            pass
    prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
    if cfg["uid"] is not None:
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])  # clears all capabilities
    else:
        try:
            prctl(47, 4)  # PR_CAP_AMBIENT_CLEAR_ALL
        except OSError:
            pass
        class Hdr(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        data = (ctypes.c_uint32 * 6)()
        ok(libc.capset(ctypes.byref(Hdr(0x20080522, 0)), data), "capset")

SECCOMP_ARCH = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}  # (AUDIT_ARCH, __NR_socket)

def install_seccomp():
    """socket(AF_UNIX, ...) and io_uring_setup fail with EPERM; other ABIs are refused: a host
    socket reachable by path (D-Bus, X11) cannot be connected to from any mode."""
    arch, nr_socket = SECCOMP_ARCH[os.uname().machine]
    LD, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06
    ALLOW, DENY = 0x7FFF0000, 0x00050000 | 1
    prog = [(LD, 0, 0, 4), (JEQ, 0, 7, arch), (LD, 0, 0, 0), (JGE, 5, 0, 0x40000000),
            (JEQ, 4, 0, 425), (JEQ, 0, 2, nr_socket), (LD, 0, 0, 16), (JEQ, 1, 0, 1),
            (RET, 0, 0, ALLOW), (RET, 0, 0, DENY)]
    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]
    arr = (Filter * len(prog))(*[Filter(*f) for f in prog])
    prctl(38, 1)  # PR_SET_NO_NEW_PRIVS (required to install a filter unprivileged)
    ok(libc.prctl(ctypes.c_int(22), ctypes.c_ulong(2), ctypes.byref(Prog(len(prog), arr)),
                  ctypes.c_ulong(0), ctypes.c_ulong(0)), "seccomp")

def set_limits():
    L = cfg["limits"]
    R = resource
    hard = L["cpu_s"] + (0 if cfg["namespaces"] else 1)  # pid 1 would ignore the soft SIGXCPU
    R.setrlimit(R.RLIMIT_CPU, (L["cpu_s"], hard))
    R.setrlimit(R.RLIMIT_FSIZE, (L["fsize"], L["fsize"]))
    R.setrlimit(R.RLIMIT_NOFILE, (L["nofile"], L["nofile"]))
    nproc = L["nproc"]
    if cfg["mode"] == "rlimits":  # the count is the whole user's: allow what runs already
        me = os.getuid()
        for p in os.listdir("/proc"):
            try:
                if p.isdigit() and os.stat("/proc/" + p).st_uid == me:
                    nproc += len(os.listdir("/proc/%s/task" % p))
            except OSError:
                pass
    R.setrlimit(R.RLIMIT_NPROC, (nproc, nproc))
    R.setrlimit(R.RLIMIT_AS, (L["as"], L["as"]))

def setup_namespace():
    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    wd = cfg["workdir"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | 8)
    fds = []
    for p in cfg["expose"]:
        try:
            fds.append((p, os.open(p, os.O_PATH | os.O_DIRECTORY)))
        except OSError:
            pass
    for h in cfg["hide"]:
        if os.path.isdir(h):
            mount("tmpfs", h, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for p, fd in fds:
        os.makedirs(p, exist_ok=True)
        mount("/proc/self/fd/%d" % fd, p, None, MS_BIND | MS_REC)
        os.close(fd)
    owner = "uid=%d,gid=%d" % (cfg["uid"] or 0, cfg["gid"] or 0)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777")
    os.makedirs(wd, exist_ok=True)  # under a hidden directory it must be made again
    mount("tmpfs", wd, "tmpfs", MS_NOSUID | MS_NODEV,
          "size=%dk,mode=0700,%s" % (cfg["limits"]["disk_kb"], owner))
    if cfg["userns"]:
        try:  # per user namespace: no nested namespaces for the code
            with open("/proc/sys/user/max_user_namespaces", "w") as f:
                f.write("0")
        except OSError:
            pass
    readonly_everything(keep={wd, "/dev/shm"})

def start_code():
    """Last setup steps, then run the code as __main__ (never returns)."""
    os.chdir(cfg["workdir"])
    set_limits()
    if cfg["mode"] != "rlimits":
        drop_privileges()
    install_seccomp()
    if cfg["namespaces"]:
        prctl(1, signal.SIGKILL)  # re-arm: a credential change clears PDEATHSIG
    for name, text in cfg["files"].items():
        with open(name, "w") as f:
            f.write(text)
    sys.path[:] = [""] + [p for p in sys.path if p] + cfg["site_paths"]
    os.write(STATUS, b"OK")
    os.close(STATUS)
    run_user_code(cfg["code"])

def run_user_code(code):
    import _ast  # builtin; the `ast` module costs ~4 ms to import
    sys.stdout.reconfigure(line_buffering=True)
    del sys.modules["__main__"]
    mod = type(sys)("__main__")
    mod.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = mod
    sys.argv = ["<code>"]
    reserve = bytearray(1 << 22)  # freed to report a MemoryError
    status = 0
    try:
        tree = compile(code, "<code>", "exec", _ast.PyCF_ONLY_AST)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], _ast.Expr) else None
        exec(compile(tree, "<code>", "exec"), mod.__dict__)
        if last is not None:  # like a REPL: show the value of a final bare expression
            value = eval(compile(_ast.Expression(last.value), "<code>", "eval"), mod.__dict__)
            if value is not None:
                print(repr(value))
    except SystemExit as e:
        status = e.code
    except BaseException as e:
        del reserve
        if isinstance(e, MemoryError):
            mod.__dict__.clear()
        import linecache, traceback
        linecache.cache["<code>"] = (len(code), None, code.splitlines(True), "<code>")
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<code>":
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb)
        status = 1
    sys.exit(status)

def wait_and_report(pid, report):
    while True:
        try:
            _, st, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    if report:
        code = ("S%d" % os.WTERMSIG(st)) if os.WIFSIGNALED(st) else ("X%d" % os.WEXITSTATUS(st))
        if code == "S9" and usage.ru_utime + usage.ru_stime >= cfg["limits"]["cpu_s"] - 0.05:
            code = "S%d" % signal.SIGXCPU  # pid 1 ignores SIGXCPU: it met the hard limit
        os.write(STATUS, code.encode())
    os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))

def child_of_namespaces():
    """Unshare the other namespaces, fork the namespace's init (the code) and wait for it."""
    ok(libc.unshare(NEWNS | NEWNET | NEWIPC | NEWUTS | NEWPID), "unshare")
    pid = os.fork()
    if pid == 0:
        try:
            setup_namespace()
            start_code()
        except Exception as e:
            fail("%s: %s" % (type(e).__name__, e))
    wait_and_report(pid, report=True)

def main():
    if not cfg["namespaces"]:
        return start_code()
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            prctl(1, signal.SIGKILL)
            os.close(r1)
            os.close(w2)
            if cfg["userns"]:
                ok(libc.unshare(NEWUSER), "unshare(CLONE_NEWUSER)")
            os.write(w1, b"u")
            os.close(w1)
            if os.read(r2, 1) != b"m":
                fail("uid/gid maps were not written")
            os.close(r2)
            child_of_namespaces()
        except Exception as e:
            fail("%s: %s" % (type(e).__name__, e))
    os.close(w1)
    os.close(r2)
    if os.read(r1, 1) == b"u":
        try:
            if cfg["userns"]:
                for name, text in cfg["id_maps"]:
                    with open("/proc/%d/%s" % (pid, name), "w") as f:
                        f.write(text)
            os.write(w2, b"m")
        except OSError as e:
            os.kill(pid, signal.SIGKILL)
            fail("writing uid/gid maps: %s" % e)
    os.close(STATUS)
    wait_and_report(pid, report=False)

try:
    main()
except Exception as e:
    fail("%s: %s" % (type(e).__name__, e))
'''


class SandboxError(SandboxFailure):
    """The sandbox itself failed (setup, probe): an infrastructure error, not the code's."""


@dataclass(frozen=True)
class SandboxResult:
    """What one sandboxed run produced."""

    stdout: str
    """Captured standard output (decoded as UTF-8, truncated to ``max_output_bytes``)."""
    stderr: str
    """Captured standard error (tracebacks), truncated the same way."""
    exit_code: int | None
    """The code's exit status; ``-N`` when killed by signal N; None if it never finished."""
    timed_out: bool
    """The wall-clock limit ran out and the run was killed."""
    killed_reason: str | None
    """Why the run was cut short: ``wall_time``, ``cpu_time``, ``output_limit``,
    ``signal:<NAME>``; None when the code ended by itself."""
    duration_s: float
    """Wall-clock seconds from start to cleanup."""
    truncated: bool = False
    """stdout or stderr was cut to ``max_output_bytes``."""
    mode: str = ""
    """The isolation mode used (see `sandbox_info`)."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.killed_reason is None


@dataclass(frozen=True)
class SandboxInfo:
    """The isolation in use on this machine."""

    mode: str
    """One of `MODES`."""
    guards: tuple[str, ...]
    """What it enforces: the common limits, then the mode's own guards."""
    missing: tuple[str, ...]
    """What it does not, on this machine."""
    tried: tuple[str, ...] = ()
    """Stronger modes that failed the probe, with the reason."""


STRICT_ENV = "AGENTOPD_SANDBOX_STRICT"
STRICT_MODES = ("userns", "root-ns")


def strict() -> bool:
    """Whether tool code may run only under namespaces (``--sandbox strict`` or the env var)."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0", "false", "no")


def describe(info: SandboxInfo) -> str:
    """What the model is told about the sandbox it writes code for, true to the active mode."""
    if "network" in info.guards:
        return "no network; files may be written only in the current directory."
    return (f"files should be written only in the current directory (this machine's sandbox, mode "
            f"{info.mode!r}, does not isolate the network or host files).")


_COMMON = ("wall_time", "cpu_time", "memory", "file_size", "clean_env", "fresh_workdir", "output_cap",
           "no_unix_sockets")
_ALL_EXTRA = ("network", "pid_namespace", "readonly_fs", "hidden_home", "unprivileged", "nproc")
_GUARDS = {
    "userns": _ALL_EXTRA,
    "root-ns": _ALL_EXTRA,
    "setuid": ("unprivileged", "nproc"),
    "rlimits": ("nproc",) if os.geteuid() != 0 else (),
}
_info: SandboxInfo | None = None
_info_lock = threading.Lock()


def _candidates() -> list[str]:
    forced = os.environ.get("AGENTOPD_SANDBOX_MODE")
    if forced:
        if forced not in MODES:
            raise SandboxError(f"AGENTOPD_SANDBOX_MODE={forced!r}: expected one of {MODES}")
        return [forced]
    if not sys.platform.startswith("linux"):
        return ["rlimits"]
    if os.geteuid() == 0:
        return ["userns", "root-ns", "setuid", "rlimits"]
    return ["userns", "rlimits"]


_PROBE = """
import fractions, json, os, statistics  # stdlib imports must work as the sandbox user
out = {"pid": os.getpid(), "uid": os.getuid()}
with open("/proc/net/dev") as f:
    out["ifaces"] = sorted(l.split(":")[0].strip() for l in f.readlines()[2:])
try:
    open(os.path.join(%r, "probe"), "w").close()
    out["wrote_outside"] = True
except OSError:
    out["wrote_outside"] = False
print(json.dumps(out))
"""


def _probe(mode: str) -> str | None:
    """None if `mode` works and its guards hold here, else why not."""
    outside = tempfile.mkdtemp(prefix="agentopd-probe-")
    try:
        os.chmod(outside, 0o1777)
        res = run_python(_PROBE % outside, timeout_s=15, mode=mode, _probing=True)
        if not res.ok:
            return f"probe exited {res.exit_code}: {res.stderr.strip()[-300:]}"
        got = json.loads(res.stdout)
        guards = _GUARDS[mode]
        if "pid_namespace" in guards and got["pid"] != 1:
            return f"not pid 1 in its pid namespace (pid {got['pid']})"
        if "network" in guards and got["ifaces"] != ["lo"]:
            return f"network interfaces visible: {got['ifaces']}"
        if "readonly_fs" in guards and got["wrote_outside"]:
            return "could write outside its working directory"
        if os.geteuid() == 0 and "unprivileged" in guards and mode != "userns" and got["uid"] != SANDBOX_UID:
            return f"runs as uid {got['uid']}"
        return None
    except SandboxError as e:
        return str(e)
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def sandbox_info() -> SandboxInfo:
    """The strongest isolation mode that works here (probed once, then cached)."""
    global _info
    with _info_lock:
        if _info is None:
            tried: list[str] = []
            for mode in _candidates():
                why = _probe(mode)
                if why is None:
                    extra = _GUARDS[mode]
                    missing = tuple(g for g in _ALL_EXTRA if g not in extra)
                    _info = SandboxInfo(mode, _COMMON + extra, missing, tuple(tried))
                    break
                tried.append(f"{mode}: {why}")
                log.info("sandbox mode %s unavailable: %s", mode, why)
            else:
                raise SandboxError("no sandbox mode works here: " + "; ".join(tried))
            if _info.missing:
                log.warning(
                    "python sandbox runs in mode %r: NOT guarded: %s (%s)",
                    _info.mode, ", ".join(_info.missing), "; ".join(tried) or "forced",
                )
        return _info


def _site_paths() -> list[str]:
    return [p for p in site.getsitepackages() if os.path.isdir(p)]


INNER_WORKDIR = "/tmp/work"
"""The code's working directory (and HOME) under namespaces."""

SOCKET_DIRS = ("/tmp", "/var/tmp", "/run", "/var/run", "/home")
"""Hidden behind empty tmpfs mounts: where host AF_UNIX sockets live (D-Bus, X11, the user's
agents), which a network namespace does not cover."""


def _hidden_and_exposed(workdir: str, site_paths: list[str]) -> tuple[list[str], list[str]]:
    homes = {"/root", os.environ.get("HOME", "/"), *SOCKET_DIRS}
    try:
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # no passwd entry (containers)
        pass
    # The working directory is a fresh tmpfs mounted after these, so it may lie under one.
    real = {os.path.realpath(h) for h in homes}
    hide = sorted(h for h in real if h != "/" and os.path.isdir(h)
                  and not any(h != o and (h + "/").startswith(o + "/") for o in real if o != "/"))
    want = [os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)]
    want += [os.path.dirname(os.path.realpath(sys.executable))] + site_paths
    under = sorted({p for p in want if any((p + "/").startswith(h + "/") for h in hide)})
    expose = [p for p in under if not any((p + "/").startswith(q + "/") for q in under if q != p)]
    return hide, expose


def _minimal_env(workdir: str, token: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "AGENTOPD_SANDBOX_TOKEN": token,
    }


def run_python(
    code: str,
    *,
    timeout_s: float = 10.0,
    cpu_s: int | None = None,
    memory_mb: int = 512,
    max_procs: int = 32,
    max_file_mb: int = 16,
    disk_mb: int = 64,
    max_output_bytes: int = 16_000,
    files: Mapping[str, str] | None = None,
    site_packages: bool = True,
    mode: str | None = None,
    _probing: bool = False,
) -> SandboxResult:
    """Run `code` as a Python program in a fresh sandbox and return what it did.

    Args:
        code: The program (run as ``__main__``; a final bare expression's value is printed).
        timeout_s: Wall-clock limit; on expiry every process of the run is killed.
        cpu_s: CPU-seconds limit per process (default: `timeout_s` rounded up).
        memory_mb: Address-space limit per process (RLIMIT_AS).
        max_procs: Process (thread) limit for the run.
        max_file_mb: Largest file the code may write.
        disk_mb: Size of the private working directory (namespace modes).
        max_output_bytes: stdout and stderr are each cut to this; the run is killed when its
            output passes 64 times this.
        files: Text files to create in the working directory before the code runs.
        site_packages: Let the code import this interpreter's site-packages (e.g. numpy).
        mode: Isolation mode; default: the probed one (`sandbox_info`).
    """
    if mode is None:
        mode = sandbox_info().mode
    elif mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r}; expected one of {MODES}")
    if strict() and not _probing and mode not in STRICT_MODES:
        raise SandboxError(f"strict sandboxing ({STRICT_ENV}=1) refuses mode {mode!r}: only "
                           f"{' or '.join(STRICT_MODES)} (namespaces) may run model-written code")
    for name in files or {}:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"sandbox file names must be plain names, got {name!r}")
    namespaces = mode in ("userns", "root-ns")
    root = os.geteuid() == 0
    drop = SANDBOX_UID if root and mode != "rlimits" else None
    start = time.monotonic()
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="agentopd-sbx-"))
    token = uuid.uuid4().hex
    site_paths = _site_paths() if site_packages else []
    hide, expose = _hidden_and_exposed(workdir, site_paths) if namespaces else ([], [])
    # Under namespaces the code's working directory is a fresh tmpfs at a fixed path inside the
    # hidden /tmp, so neither its path nor HOME tells the code anything about the host.
    inner = INNER_WORKDIR if namespaces and "/tmp" in hide else workdir
    if mode == "setuid":
        os.chown(workdir, SANDBOX_UID, SANDBOX_UID)
    if mode == "userns":
        if root:
            maps = f"0 0 1\n{SANDBOX_UID} {SANDBOX_UID} 1\n"
            id_maps = [["uid_map", maps], ["gid_map", maps]]
        else:
            id_maps = [["setgroups", "deny"], ["uid_map", f"0 {os.getuid()} 1\n"], ["gid_map", f"0 {os.getgid()} 1\n"]]
    else:
        id_maps = []
    status_r, status_w = os.pipe()
    cfg = {
        "mode": mode,
        "namespaces": namespaces,
        "userns": mode == "userns",
        "uid": drop,
        "gid": drop,
        "id_maps": id_maps,
        "status_fd": status_w,
        "workdir": inner,
        "hide": hide,
        "expose": expose,
        "site_paths": site_paths,
        "files": dict(files or {}),
        "code": code,
        "limits": {
            "cpu_s": int(cpu_s if cpu_s is not None else max(1, math.ceil(timeout_s))),
            "as": int(memory_mb) << 20,
            "nproc": int(max_procs),
            "fsize": int(max_file_mb) << 20,
            "nofile": 256,
            "disk_kb": int(disk_mb) << 10,
        },
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-S", "-s", "-c", _LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
            env=_minimal_env(inner, token),
            start_new_session=True,
            pass_fds=(status_w,),
        )
    except OSError as e:
        os.close(status_r)
        _remove_tree(workdir)
        raise SandboxError(f"cannot start the sandbox interpreter: {e}") from e
    finally:
        os.close(status_w)
    io = _Exchange(proc, status_r, marshal.dumps(cfg), max_output_bytes)
    try:
        io.run(deadline=start + timeout_s)
    finally:
        _reap(proc, leftovers_by_token=None if namespaces else token)
        os.close(status_r)
        _remove_tree(workdir)
    status = io.status.decode(errors="replace")
    if not status.startswith("OK") and not io.timed_out:
        why = re.sub(r"X\d+$", "", status[1:]) if status.startswith("E") else f"exit {proc.returncode}"
        raise SandboxError(f"sandbox setup failed in mode {mode!r}: {why}")
    exit_code = proc.returncode
    if namespaces and not io.timed_out and io.killed_reason is None:
        if "S" in status:
            exit_code = -int(status.rsplit("S", 1)[1])
        elif "X" in status:
            exit_code = int(status.rsplit("X", 1)[1])
    killed = io.killed_reason or ("wall_time" if io.timed_out else None)
    if killed is None and exit_code is not None and exit_code < 0:
        sig = -exit_code
        killed = "cpu_time" if sig == signal.SIGXCPU else f"signal:{signal.Signals(sig).name}"
    return SandboxResult(
        stdout=io.text("stdout"),
        stderr=io.text("stderr"),
        exit_code=None if io.timed_out or io.killed_reason else exit_code,
        timed_out=io.timed_out,
        killed_reason=killed,
        duration_s=time.monotonic() - start,
        truncated=io.truncated,
        mode=mode,
    )


class _Exchange:
    """Feed stdin, collect capped stdout/stderr and the status pipe, until exit or deadline."""

    def __init__(self, proc: subprocess.Popen, status_fd: int, stdin: bytes, cap: int):
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None  # all PIPEs
        self.proc, self.cap, self.hard_cap = proc, cap, 64 * cap
        self._pipes = (proc.stdin, proc.stdout, proc.stderr)
        self.bufs = {"stdout": bytearray(), "stderr": bytearray()}
        self.total = 0
        self.status = bytearray()
        self.timed_out = False
        self.killed_reason: str | None = None
        self.truncated = False
        self._stdin = memoryview(stdin)
        self._sel = selectors.DefaultSelector()
        stdin_f, stdout_f, stderr_f = self._pipes
        os.set_blocking(stdin_f.fileno(), False)
        self._sel.register(stdin_f.fileno(), selectors.EVENT_WRITE, "stdin")
        self._sel.register(stdout_f.fileno(), selectors.EVENT_READ, "stdout")
        self._sel.register(stderr_f.fileno(), selectors.EVENT_READ, "stderr")
        self._sel.register(status_fd, selectors.EVENT_READ, "status")

    def run(self, deadline: float) -> None:
        exited_at = None
        try:
            while self._sel.get_map():
                now = time.monotonic()
                if now >= deadline:
                    self.timed_out = True
                    return
                if exited_at is None and _has_exited(self.proc.pid):
                    exited_at = now  # a leftover process may hold the pipes: stop soon
                if exited_at is not None and now - exited_at > 0.2:
                    return
                for key, _ in self._sel.select(min(deadline - now, 0.1)):
                    self._handle(key)
                    if self.killed_reason:
                        return
        finally:
            self._sel.close()
            for f in self._pipes:
                f.close()

    def _handle(self, key: selectors.SelectorKey) -> None:
        if key.data == "stdin":
            try:
                n = os.write(key.fd, self._stdin[:65536])
            except BrokenPipeError:
                n = len(self._stdin)
            self._stdin = self._stdin[n:]
            if not self._stdin:
                self._sel.unregister(key.fd)
                self._pipes[0].close()
            return
        data = os.read(key.fd, 65536)
        if not data:
            self._sel.unregister(key.fd)
            return
        if key.data == "status":
            self.status += data
            return
        buf = self.bufs[key.data]
        room = self.cap - len(buf)
        if room < len(data):
            self.truncated = True
        buf += data[: max(room, 0)]
        self.total += len(data)
        if self.total > self.hard_cap:
            self.killed_reason = "output_limit"

    def text(self, stream: str) -> str:
        out = self.bufs[stream].decode("utf-8", errors="replace")
        if self.truncated and len(self.bufs[stream]) >= self.cap:
            out += f"\n... [{stream} truncated at {self.cap} bytes]"
        return out


def _has_exited(pid: int) -> bool:
    """Whether `pid` (our child) has exited, without reaping it (its pid stays reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _reap(proc: subprocess.Popen, leftovers_by_token: str | None) -> None:
    """Kill the run's process group (and, without a pid namespace, marked leftovers); reap."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the zombie leader keeps the group id reserved
    except (ProcessLookupError, PermissionError):
        pass
    if leftovers_by_token:
        _kill_marked(leftovers_by_token)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.error("sandbox process %d did not die after SIGKILL", proc.pid)


def _kill_marked(token: str) -> None:
    marker = f"AGENTOPD_SANDBOX_TOKEN={token}".encode()
    for _ in range(3):  # a process may fork while we scan
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        os.kill(int(entry), signal.SIGKILL)
                        found = True
            except (OSError, ProcessLookupError):
                continue
        if not found:
            return


def _remove_tree(path: str) -> None:
    def fix(func, p, exc):  # the code may have left read-only directories behind
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            os.chmod(p, stat.S_IRWXU)
        except OSError:
            pass
        try:
            func(p)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOENT:
                log.warning("could not remove sandbox path %s: %s", p, e)

    shutil.rmtree(path, onerror=fix)


def format_result(res: SandboxResult) -> str:
    """The text an agent sees for a finished run: stdout, then stderr if any."""
    text = res.stdout
    if res.stderr.strip():
        text = (text.rstrip("\n") + "\n" if text.strip() else "") + "[stderr]\n" + res.stderr
    return text.rstrip("\n") if text.strip() else "(no output: use print() to show results)"


def make_python_tool(
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    files: Mapping[str, str] | None = None,
    **limits,
) -> Callable[[str], str]:
    """A typed ``python(code)`` tool running each call in a fresh sandbox (`run_python`).

    A run that raises or exits non-zero raises `ToolFailure` (the traceback is the message);
    the wall-clock or CPU limit raises `ToolTimeout`; a broken sandbox raises `SandboxError`.
    """

    def python(code: str) -> str:
        """Run a Python 3 program in a fresh sandbox and return what it prints.

        Args:
            code: A complete Python program. Print the results you need; the value of a final bare expression is printed too. Each call starts from scratch: no variables, imports or files persist between calls. Standard library only; SANDBOX
        """
        res = run_python(code, timeout_s=timeout_s, memory_mb=memory_mb, files=files, **limits)
        if res.killed_reason in ("wall_time", "cpu_time"):
            limit = "wall-clock" if res.timed_out else "CPU"
            partial = f"; output so far:\n{res.stdout[-500:]}" if res.stdout.strip() else ""
            raise ToolTimeout(f"the code hit the {limit} limit of {timeout_s:g} s{partial}")
        if not res.ok:
            why = res.killed_reason or f"exit status {res.exit_code}"
            raise ToolFailure(f"the code failed ({why}):\n{format_result(res)}")
        return format_result(res)

    # The schema the model reads says what this machine's mode guards, not what the best one would.
    python.__doc__ = (python.__doc__ or "").replace("SANDBOX", describe(sandbox_info()))
    return python

"""The python sandbox holds against real attacks (each test asserts a concrete effect).

Tests that need a guard the machine's isolation mode lacks are skipped with the mode named;
on the development machines (root, namespaces allowed) the ``userns`` mode runs them all.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agentopd.tools.core import ToolCall, ToolSet
from agentopd.tools.python_sandbox import (
    MODES,
    SandboxResult,
    make_python_tool,
    run_python,
    sandbox_info,
)

INFO = sandbox_info()


def needs(*guards: str):
    lacking = [g for g in guards if g not in INFO.guards]
    return pytest.mark.skipif(bool(lacking), reason=f"sandbox mode {INFO.mode!r} lacks {lacking}")


def _procs_matching(needle: bytes, field: str = "cmdline") -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/{field}", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _gone(needle: bytes, field: str = "cmdline", within_s: float = 2.0) -> bool:
    end = time.monotonic() + within_s
    while _procs_matching(needle, field):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_runs_code_and_reports_mode():
    res = run_python("import sys\nprint('hi')\nprint('oops', file=sys.stderr)\nsys.exit(3)")
    assert isinstance(res, SandboxResult)
    assert (res.stdout, res.stderr, res.exit_code) == ("hi\n", "oops\n", 3)
    assert not res.timed_out and res.killed_reason is None
    assert res.mode == INFO.mode in MODES
    assert run_python("x = 6\nx * 7").stdout == "42\n"  # a final expression is shown
    tb = run_python("def f():\n    return 1 / 0\nf()")
    assert tb.exit_code == 1 and "ZeroDivisionError" in tb.stderr and 'File "<code>", line 2' in tb.stderr


def test_infinite_loop_times_out_quickly():
    t = time.monotonic()
    res = run_python("while True:\n    pass", timeout_s=1.0)
    assert res.timed_out and res.killed_reason == "wall_time" and res.exit_code is None
    assert time.monotonic() - t < 3.0


def test_cpu_time_limit_kills():
    res = run_python("while True:\n    pass", timeout_s=20, cpu_s=1)
    assert not res.timed_out and res.killed_reason == "cpu_time"
    assert res.duration_s < 5


def test_memory_bomb_fails_inside_the_sandbox():
    res = run_python("x = bytearray(4 * 1024**3)", memory_mb=256)
    assert res.exit_code == 1 and "MemoryError" in res.stderr
    grow = run_python("chunks = []\nwhile True:\n    chunks.append(b'x' * 10**6)", memory_mb=256, timeout_s=10)
    assert grow.exit_code == 1 and "MemoryError" in grow.stderr
    assert run_python("print(len(bytearray(100 * 1024**2)))", memory_mb=256).stdout == "104857600\n"


@needs("nproc")
def test_fork_bomb_is_bounded_and_cleaned_up():
    counted = run_python(
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
        "            time.sleep(60)\n            os._exit(0)\n        n += 1\n"
        "except OSError as e:\n    print('blocked', n, e.errno)",
        max_procs=16,
        timeout_s=10,
    )
    blocked, n, err = counted.stdout.split()
    assert blocked == "blocked" and 0 < int(n) < 16 and err == "11"  # EAGAIN
    name = "bomb" + uuid.uuid4().hex[:8]
    t = time.monotonic()
    res = run_python(
        "import ctypes, os\nctypes.CDLL(None).prctl(15, b'%s', 0, 0, 0)\n"
        "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass" % name,
        max_procs=16,
        timeout_s=2.0,
    )
    assert res.timed_out and time.monotonic() - t < 5
    assert _gone(name.encode(), field="comm"), "fork-bomb processes survived the call"
    assert subprocess.run(["true"]).returncode == 0  # the machine can still fork


@needs("network")
def test_no_network_even_to_localhost():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    try:
        res = run_python(
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=2)\n"
            "    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)" % port
        )
        assert res.stdout.startswith("refused"), res.stdout
        with pytest.raises(socket.timeout):
            srv.accept()  # nothing reached the listener
    finally:
        srv.close()


UNIX_PAYLOAD = """
import socket
for addr in {addrs!r}:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(addr)
        s.send(b"PAYLOAD")
        print("connected", addr)
    except OSError as e:
        print("refused", e.errno)
"""


@pytest.mark.parametrize("mode", [None, "rlimits"])
def test_host_unix_sockets_are_unreachable_in_every_mode(mode):
    """A 0777 socket the host binds in /tmp (and an abstract one): D-Bus and X11 live there."""
    path = f"/tmp/agentopd-host-{uuid.uuid4().hex[:8]}.sock"
    abstract = f"\0agentopd-{uuid.uuid4().hex[:8]}"
    servers = []
    for addr in (path, abstract):
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(addr)
        srv.listen(1)
        srv.settimeout(0.3)
        servers.append(srv)
    os.chmod(path, 0o777)
    try:
        res = run_python(UNIX_PAYLOAD.format(addrs=[path, abstract]), mode=mode)
        assert res.stdout.split().count("refused") == 2, res.stdout + res.stderr
        for srv in servers:
            with pytest.raises(socket.timeout):
                srv.accept()  # nothing reached the host
        assert run_python("import socket\na, b = socket.socketpair()\na.send(b'x')\nprint(b.recv(1))",
                          mode=mode).stdout.strip() == "b'x'"  # private socket pairs still work
    finally:
        for srv in servers:
            srv.close()
        os.unlink(path)


def test_socket_directories_are_hidden():
    info = sandbox_info()
    if "readonly_fs" not in info.guards:
        pytest.skip(f"mode {info.mode} has no mount namespace")
    marker = Path("/tmp") / f"agentopd-visible-{uuid.uuid4().hex[:8]}"
    marker.write_text("host")
    try:
        res = run_python(f"import os\nprint(os.path.exists({str(marker)!r}), os.listdir('/run'))")
        assert res.stdout.split()[0] == "False", res.stdout
    finally:
        marker.unlink()


def test_working_directory_and_home_reveal_no_host_path():
    if "readonly_fs" not in sandbox_info().guards:
        pytest.skip(f"mode {sandbox_info().mode} has no mount namespace")
    res = run_python("import os\nprint(os.getcwd(), os.environ['HOME'], os.environ['TMPDIR'])")
    assert res.stdout.split() == ["/tmp/work"] * 3


def test_parent_environment_is_not_visible(monkeypatch):
    secret = "sk-" + uuid.uuid4().hex
    monkeypatch.setenv("AGENTOPD_TEST_API_KEY", secret)
    res = run_python(
        "import os\nprint(dict(os.environ))\n"
        "for p in ('/proc/%d/environ', '/proc/1/environ', '/proc/self/environ'):\n"
        "    try:\n        print(open(p, 'rb').read())\n    except OSError as e:\n        print(p, e)"
        % os.getpid()
    )
    assert res.exit_code == 0 and "PATH" in res.stdout
    assert secret not in res.stdout + res.stderr
    assert "AGENTOPD_TEST_API_KEY" not in res.stdout


@needs("readonly_fs")
def test_cannot_write_outside_the_working_directory():
    outside = Path(tempfile.mkdtemp(prefix="agentopd-test-outside-"))
    os.chmod(outside, 0o777)  # world-writable: only the sandbox can stop the write
    stray = Path(tempfile.gettempdir()) / f"agentopd-escape-{uuid.uuid4().hex}"
    try:
        res = run_python(
            "for p in (%r, %r, 'inside.txt'):\n    try:\n        open(p, 'w').write('x')\n"
            "        print('wrote', p)\n    except OSError as e:\n        print('denied', e.errno)"
            % (str(outside / "x.txt"), str(stray))
        )
        lines = res.stdout.splitlines()
        # EROFS on a read-only mount, or ENOENT where /tmp itself is hidden behind an empty tmpfs
        assert [x.split()[0] for x in lines] == ["denied", "denied", "wrote"] and lines[-1] == "wrote inside.txt"
        assert all(int(x.split()[1]) in (2, 30) for x in lines[:2]), lines
        assert not (outside / "x.txt").exists() and not stray.exists()
    finally:
        shutil.rmtree(outside, ignore_errors=True)
        stray.unlink(missing_ok=True)


def test_background_processes_die_with_the_call():
    mark = f"9{uuid.uuid4().int % 10**6}.5"
    res = run_python(
        "import os, subprocess\n"
        "subprocess.Popen(['sleep', %r], start_new_session=True)\n"
        "if os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', %r])\n"
        "print('spawned')" % (mark, mark)
    )
    assert res.stdout == "spawned\n"
    assert _gone(mark.encode()), "a process started by the code outlived the call"


@needs("pid_namespace")
def test_daemons_that_scrub_their_environment_die_too():
    mark = f"8{uuid.uuid4().int % 10**6}.5"
    res = run_python(
        "import subprocess\nsubprocess.Popen(['sleep', %r], start_new_session=True, env={})\nprint('ok')" % mark
    )
    assert res.stdout == "ok\n"
    assert _gone(mark.encode()), "a daemon without the sandbox marker outlived the call"


def test_file_size_limit():
    res = run_python(
        "import os\ntry:\n    with open('big', 'wb') as f:\n        f.write(b'x' * (8 << 20))\n"
        "except OSError as e:\n    print('error', e.errno)\nprint(os.path.getsize('big'))",
        max_file_mb=1,
    )
    assert res.stdout.split() == ["error", "27", str(1 << 20)]  # EFBIG, cut at the limit


def test_output_is_truncated_and_floods_are_killed():
    res = run_python("print('y' * 100_000)", max_output_bytes=1000)
    assert res.truncated and len(res.stdout) < 1100 and "truncated" in res.stdout
    t = time.monotonic()
    flood = run_python("while True:\n    print('x' * 1000)", timeout_s=10, max_output_bytes=1000)
    assert flood.killed_reason == "output_limit" and time.monotonic() - t < 5


def test_working_directory_is_fresh_and_removed():
    res = run_python(
        "import os\nprint(os.getcwd())\nprint(sorted(os.listdir('.')))\nwith open('made.txt', 'w') as f:\n    f.write('x')",
        files={"data.txt": "1 2 3"},
    )
    cwd, listing = res.stdout.splitlines()
    assert listing == "['data.txt']"
    assert not os.path.exists(cwd)
    again = run_python("import os\nprint(os.listdir('.'))")
    assert again.stdout == "[]\n"


@needs("unprivileged")
def test_no_privilege_to_undo_the_sandbox():
    res = run_python(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.mount(None, b'/', None, 32 | 4096, None))\n"  # remount / read-write
        "try:\n    os.setuid(0) if os.getuid() else os.chroot('/')\n    print('escalated')\n"
        "except OSError:\n    print('denied')"
    )
    assert res.stdout.split() == ["-1", "denied"]


def test_concurrent_calls_do_not_interfere():
    def one(i: int) -> str:
        return run_python(f"import os\nopen('f', 'w').write('{i}')\nprint(open('f').read())").stdout

    with ThreadPoolExecutor(4) as ex:
        assert list(ex.map(one, range(8))) == [f"{i}\n" for i in range(8)]


def test_degraded_mode_still_limits_time_env_and_workdir(monkeypatch):
    monkeypatch.setenv("AGENTOPD_TEST_API_KEY", "secret-value")
    res = run_python("import os\nprint(os.getcwd(), 'AGENTOPD_TEST_API_KEY' in os.environ)", mode="rlimits")
    cwd, visible = res.stdout.split()
    assert visible == "False" and not os.path.exists(cwd) and res.mode == "rlimits"
    assert run_python("while True:\n    pass", timeout_s=0.5, mode="rlimits").timed_out


def test_python_tool_reports_errors_as_tool_messages():
    tools = ToolSet([make_python_tool(timeout_s=1.0)])
    schema = tools.schemas[0]["function"]
    assert schema["name"] == "python" and schema["parameters"]["required"] == ["code"]
    assert schema["description"] and schema["parameters"]["properties"]["code"]["description"]
    ok = tools.run(ToolCall("python", {"code": "print(sum(range(10)))"}))
    assert (ok.content, ok.error) == ("45", None)
    raised = tools.run(ToolCall("python", {"code": "raise ValueError('bad input')"}))
    assert raised.error == "tool_error" and "ValueError: bad input" in raised.content
    slow = tools.run(ToolCall("python", {"code": "import time\nprint('started')\ntime.sleep(30)"}))
    assert slow.error == "timeout" and "started" in slow.content
    silent = tools.run(ToolCall("python", {"code": "x = 1"}))
    assert silent.error is None and "no output" in silent.content


def test_tool_is_safe_to_share_between_threads():
    tool = make_python_tool()
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(tool(f"print({i} * 2)"))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["0", "2", "4", "6"]


def test_strict_refuses_modes_without_namespaces(monkeypatch):
    from agentopd.tools.python_sandbox import SandboxError, describe

    monkeypatch.setenv("AGENTOPD_SANDBOX_STRICT", "1")
    with pytest.raises(SandboxError, match="strict"):
        run_python("print(1)", mode="rlimits")
    info = sandbox_info()
    if info.mode in ("userns", "root-ns"):
        assert run_python("print(1)").stdout.strip() == "1"
    weak = type(info)("rlimits", ("wall_time",), ("network",))
    assert "does not isolate the network" in describe(weak)  # the model is told the truth
    assert "no network" in describe(type(info)("userns", ("network",), ()))


def test_doctor_and_strict_cli():
    import sys

    out = subprocess.run([sys.executable, "-m", "agentopd.cli", "doctor"], capture_output=True, text=True)
    assert out.returncode == 0 and "sandbox mode" in out.stdout and "no_unix_sockets" in out.stdout
    env = {**os.environ, "AGENTOPD_SANDBOX_MODE": "rlimits"}
    out = subprocess.run([sys.executable, "-m", "agentopd.cli", "train", "--sandbox", "strict", "--out",
                          tempfile.mkdtemp() + "/run"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "--sandbox strict" in out.stdout and "Traceback" not in out.stdout + out.stderr

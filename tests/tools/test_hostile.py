"""Hostile payloads against every tool, as the model would send them (issue 9's suite).

Each payload goes through the tool as an episode sees it (`ToolSet.run`, or `env.step`), and each
asserts three things: the payload was contained (its effect did not happen), the episode goes on
(a tool message came back, nothing raised), and the host is unchanged (listeners the test opened
received nothing, marker files are untouched, this process and its files are fine). Python
payloads run in the probed mode and in ``rlimits``; a payload whose guard a mode does not claim
(`sandbox_info`) is skipped there, named, instead of asserting what the mode never promised.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentopd.envs.registry import make_env
from agentopd.tools.core import ToolCall, ToolSet, format_tool_call
from agentopd.tools.python_sandbox import make_python_tool, sandbox_info


@dataclass
class Host:
    """What the payloads aim at, opened by the test on this machine."""

    tcp: socket.socket
    udp: socket.socket
    tcp6: socket.socket | None
    unix_path: str
    unix: socket.socket
    secret: str
    home_secret: Path
    marker: Path
    """A world-writable host file whose content must not change."""

    def received_nothing(self) -> bool:
        for s in (self.tcp, self.unix) + ((self.tcp6,) if self.tcp6 else ()):
            s.settimeout(0.05)
            try:
                s.accept()
                return False
            except (TimeoutError, BlockingIOError):
                pass
        self.udp.settimeout(0.05)
        try:
            self.udp.recv(100)
            return False
        except (TimeoutError, BlockingIOError):
            return True


@pytest.fixture(scope="module")
def host():
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        tcp6 = socket.socket(socket.AF_INET6)
        tcp6.bind(("::1", 0))
        tcp6.listen(4)
    except OSError:
        tcp6 = None
    path = f"/tmp/agentopd-hostile-{uuid.uuid4().hex[:8]}.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    unix.listen(4)
    os.chmod(path, 0o777)
    secret = f"sk-hostile-{uuid.uuid4().hex}"
    os.environ["AGENTOPD_TEST_HOSTILE_KEY"] = secret
    home = Path(os.path.expanduser("~")) / f".agentopd-hostile-{uuid.uuid4().hex[:8]}"
    home.write_text(secret)
    marker = Path("/tmp") / f"agentopd-hostile-marker-{uuid.uuid4().hex[:8]}"
    marker.write_text("original")
    os.chmod(marker, 0o666)
    h = Host(tcp, udp, tcp6, path, unix, secret, home, marker)
    yield h
    for s in (tcp, udp, unix) + ((tcp6,) if tcp6 else ()):
        s.close()
    os.unlink(path)
    home.unlink()
    marker.unlink()
    os.environ.pop("AGENTOPD_TEST_HOSTILE_KEY", None)


# (name, the guard it attacks, code; {tcp}, {udp}, {tcp6}, {unix}, {home}, {marker}, {ppid} are filled in).
# Each prints "ESCAPED" (spelt in two halves, so a traceback quoting the line does not) if its effect happened.
PY = [
    ("tcp to a host listener", "network", "import socket\ns=socket.create_connection(('127.0.0.1',{tcp}),timeout=1)\ns.send(b'x');print('ESC'+'APED')"),
    ("udp to a host listener", "network", "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.sendto(b'x',('127.0.0.1',{udp}));print('ESC'+'APED')"),
    ("ipv6 tcp to a host listener", "network", "import socket\ns=socket.create_connection(('::1',{tcp6}),timeout=1)\ns.send(b'x');print('ESC'+'APED')"),
    ("dns lookup", "network", "import socket\nsocket.getaddrinfo('pypi.org',443);print('ESC'+'APED')"),
    ("unix socket by path", "no_unix_sockets", "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect({unix!r});s.send(b'x');print('ESC'+'APED')"),
    ("abstract unix socket", "no_unix_sockets", "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect('\\0agentopd-none');print('ESC'+'APED')"),
    ("parent's environment", "clean_env", "import os\nprint('ESC'+'APED' if 'AGENTOPD_TEST_HOSTILE_KEY' in os.environ else 'ok')"),
    ("parent's /proc environ", "pid_namespace", "d=open('/proc/{ppid}/environ','rb').read()\nprint('ESC'+'APED' if b'AGENTOPD_TEST_HOSTILE_KEY' in d else 'ok')"),
    ("host processes in /proc", "pid_namespace", "import os\nprint('ESC'+'APED' if str({ppid}) in os.listdir('/proc') else 'ok')"),
    ("a secret in the home directory", "hidden_home", "print('ESC'+'APED' if open({home!r}).read() else 'ok')"),
    ("overwrite a world-writable host file", "readonly_fs", "open({marker!r},'w').write('pwned');print('ESC'+'APED')"),
    ("create a file in /tmp", "readonly_fs", "open('/tmp/agentopd-hostile-new','w').write('x');print('ESC'+'APED')"),
    ("write into site-packages", "readonly_fs", "import os,site\nopen(os.path.join(site.getsitepackages()[0],'evil.pth'),'w').write('x');print('ESC'+'APED')"),
    ("kill the caller", "pid_namespace", "import os,signal\nos.kill({ppid},signal.SIGKILL);print('ESC'+'APED')"),
    ("kill every process", "pid_namespace", "import os,signal\nos.kill(-1,signal.SIGKILL)\nprint('ok')"),
    ("ptrace the caller", "pid_namespace", "import ctypes\nlibc=ctypes.CDLL(None,use_errno=True)\nr=libc.ptrace(16,{ppid},0,0)\nprint('ESC'+'APED' if r==0 else 'ok')"),
    ("become root", "unprivileged", "import os\nos.setuid(0);open('/etc/agentopd-hostile','w');print('ESC'+'APED')"),
    ("mount a filesystem", "unprivileged", "import ctypes\nlibc=ctypes.CDLL(None,use_errno=True)\nr=libc.mount(b'none',b'/mnt',b'tmpfs',0,None)\nprint('ESC'+'APED' if r==0 else 'ok')"),
    ("new namespaces to undo the sandbox", "unprivileged", "import ctypes\nlibc=ctypes.CDLL(None,use_errno=True)\nr=libc.unshare(0x10000000)\nr2=libc.unshare(0x40000000) if r==0 else -1\nprint('ESC'+'APED' if r2==0 else 'ok')"),
    ("fork bomb", "nproc", "import os\nn=0\ntry:\n    while True:\n        if os.fork()==0:\n            import time;time.sleep(30)\n        n+=1\nexcept OSError:\n    print('ok',n)"),
    ("thread bomb", "nproc", "import threading,time\nn=0\ntry:\n    while True:\n        threading.Thread(target=time.sleep,args=(30,),daemon=True).start();n+=1\nexcept (RuntimeError,OSError):\n    print('ok',n)"),
    ("memory bomb", "memory", "x=[]\ntry:\n    while True:\n        x.append(bytearray(1<<26))\nexcept MemoryError:\n    print('ok',len(x))"),
    ("disk bomb", "file_size", "f=open('big','wb')\ntry:\n    while True:\n        f.write(b'0'*(1<<20))\nexcept OSError:\n    print('ok')"),
    ("fd bomb", "wall_time", "fs=[]\ntry:\n    while True:\n        fs.append(open('/dev/null'))\nexcept OSError:\n    print('ok',len(fs))"),
    ("cpu burn", "cpu_time", "while True:\n    pass"),
    ("sleep forever", "wall_time", "import time\ntime.sleep(3600)"),
    ("daemon that outlives the call", "pid_namespace", "import os,time\nif os.fork()==0:\n    os.setsid()\n    if os.fork()==0:\n        time.sleep(2);open({marker!r},'w').write('daemon')\n    os._exit(0)\nprint('ok')"),
    ("huge output", "output_cap", "import sys\nsys.stdout.write('A'*50_000_000)"),
    ("binary output", "output_cap", "import sys\nsys.stdout.buffer.write(bytes(range(256))*100)"),
    ("undecodable stderr", "output_cap", "import sys\nsys.stderr.buffer.write(b'\\xff\\xfe\\xed'*1000);raise SystemExit(3)"),
    ("read /etc/shadow", "unprivileged", "print('ESC'+'APED' if open('/etc/shadow').read() else 'ok')"),
    ("signal the process group", "pid_namespace", "import os,signal\nos.killpg(0,signal.SIGKILL)"),
]


def _modes() -> list[str]:
    probed = sandbox_info().mode
    return [probed] + (["rlimits"] if probed != "rlimits" else [])


def _guards(mode: str) -> set[str]:
    from agentopd.tools.python_sandbox import _COMMON, _GUARDS

    return set(_COMMON) | set(_GUARDS[mode])


@pytest.mark.parametrize("mode", _modes())
@pytest.mark.parametrize("name, guard, code", PY, ids=[p[0] for p in PY])
def test_python_payload_is_contained(host, mode, name, guard, code):
    if guard not in _guards(mode):
        pytest.skip(f"mode {mode} does not claim {guard}")
    if "{tcp6}" in code and host.tcp6 is None:
        pytest.skip("no IPv6 on this machine")
    filled = code.format(tcp=host.tcp.getsockname()[1], udp=host.udp.getsockname()[1],
                         tcp6=host.tcp6.getsockname()[1] if host.tcp6 else 0, unix=host.unix_path,
                         home=str(host.home_secret), marker=str(host.marker), ppid=os.getpid())
    result = ToolSet([make_python_tool(timeout_s=3.0, memory_mb=256, mode=mode)]).run(
        ToolCall("python", {"code": filled}))
    # contained: no effect reported, and the host saw nothing
    assert "ESCAPED" not in result.content, (name, result.content[:500])
    assert host.received_nothing(), name
    assert host.marker.read_text() == "original", name
    assert host.home_secret.read_text() == host.secret
    assert not Path("/tmp/agentopd-hostile-new").exists()
    # the episode goes on: a renderable tool message came back
    result.content.encode("utf-8")
    assert len(result.content) < 20_000


def test_the_daemon_payload_left_nothing_running(host):
    import time

    time.sleep(2.5)  # the daemon payload would have written the marker by now
    assert host.marker.read_text() == "original"


SQL = [
    "INSERT INTO {t} VALUES (1)", "DROP TABLE {t}", "DELETE FROM {t}", "UPDATE {t} SET rowid = 0",
    "CREATE TABLE evil (x)", "ATTACH DATABASE '/tmp/agentopd-evil.db' AS evil", "VACUUM INTO '/tmp/agentopd-evil.db'",
    "PRAGMA query_only = OFF", "PRAGMA writable_schema = ON", "SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')",
    "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r",
    "SELECT printf('%.*c', 1e9, 'x')", "SELECT randomblob(10)", "SELECT " + "(" * 2000 + "1" + ")" * 2000,
    "SELECT * FROM {t} a, {t} b, {t} c, {t} d, {t} e, {t} f", "SELECT zeroblob(2000000000)",
]


@pytest.mark.parametrize("sql", SQL)
def test_sql_payload_is_contained(sql):
    import time

    env = make_env("agentopd/SQL-v0")
    env.reset(seed=0)
    db = env.unwrapped.db
    tables = env.unwrapped.task.data["db"]["tables"]
    table = tables[0]["name"] if isinstance(tables, list) else next(iter(tables))
    count = f"SELECT count(*) FROM {table}"
    before = db.run_query(count)
    t0 = time.perf_counter()
    obs, _, term, trunc, info = env.step(format_tool_call("run_query", {"sql": sql.format(t=table)}))
    assert time.perf_counter() - t0 < db.time_limit_s + 1.0
    assert obs and obs[0]["role"] == "tool" and not term  # the episode goes on
    assert info["tool_errors"] == 1 or " | " in obs[0]["content"]  # refused, or a harmless, capped read
    assert db.run_query(count) == before  # data unchanged
    assert not Path("/tmp/agentopd-evil.db").exists()  # no file written on the host


FILES = [
    ("cat", {"path": "../../../../etc/passwd"}), ("cat", {"path": "/etc/shadow"}),
    ("write_file", {"path": "/x", "content": "A" * 200_000}), ("rm", {"path": "/"}),
    ("cat", {"path": "/\udcff"}), ("mkdir", {"path": "/" + "/".join(["d"] * 100)}),
    ("grep", {"pattern": "(a+)+$", "path": "/"}), ("write_file", {"path": "/" + "n" * 1000, "content": "x"}),
]


@pytest.mark.parametrize("tool, args", FILES, ids=[f"{t} {str(a)[:30]}" for t, a in FILES])
def test_files_payload_is_contained(tool, args):
    env = make_env("agentopd/Files-v0")
    env.reset(seed=0)
    before = env.unwrapped.vfs.snapshot()
    try:
        call = format_tool_call(tool, args)
    except UnicodeEncodeError:
        call = "<tool_call>" + '{"name": "%s", "arguments": {"path": "/\\udcff"}}' % tool + "</tool_call>"
    obs, *_ = env.step(call)
    obs[0]["content"].encode("utf-8")
    assert "root:" not in obs[0]["content"]  # the host's files are not the virtual ones
    if tool in ("cat", "rm", "grep"):
        assert env.unwrapped.vfs.snapshot() == before  # refused or read-only: nothing changed
    env.unwrapped.oracle_action()  # the env still works


CALC = ["__import__('os').system('touch /tmp/agentopd-evil')", "(lambda: 1)()", "().__class__.__base__",
        "9 ** 9 ** 9", "round(1, -10**7)", "(" * 120 + "1" + ")" * 120, "'a' * 10**9", "open('/etc/passwd')"]


@pytest.mark.parametrize("expr", CALC)
def test_calculator_payload_is_contained(expr):
    import time

    env = make_env("agentopd/Calc-v0")
    env.reset(seed=0)
    t0 = time.perf_counter()
    obs, *_, info = env.step(format_tool_call("calculator", {"expression": expr}))
    assert time.perf_counter() - t0 < 1.0
    assert obs[0]["role"] == "tool" and (info["tool_errors"] == 1 or obs[0]["content"] == "1")  # 120 parens is arithmetic
    assert not Path("/tmp/agentopd-evil").exists()

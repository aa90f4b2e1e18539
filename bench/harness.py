"""What the benchmarks share: child processes cleaned up on any exit, the fake upstream and the
engine started on free loopback ports with a private var dir, and wrk runs parsed into figures.
Used by bench/gateway_overhead.py; a benchmark against another gateway starts the same pieces."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
PATH = "/v1/chat/completions"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes ----------------------------------------------------------------------------------
@dataclass
class Procs:
    """Every long-running child, each in its own session; stopped in reverse order, by pid."""

    items: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
        f = log.open("wb")
        p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=kw.pop("stdout", f), stderr=f, start_new_session=True, **kw)
        self.items.append((name, p))
        return p

    def stop(self, p: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
        if p.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(grace_s)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.items = [(n, q) for n, q in self.items if q is not p]

    def stop_all(self) -> None:
        for _name, p in reversed(list(self.items)):
            self.stop(p)


def sigterm_as_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads (from /proc); a negative pid: of that thread alone
    (-pid is the main thread, the one running the event loop)."""
    stat = Path(f"/proc/{pid}/stat" if pid > 0 else f"/proc/{-pid}/task/{-pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as r:
        return r.status, r.read().decode()


# -- set-up -------------------------------------------------------------------------------------
def start_fake(procs: Procs, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = procs.spawn(
        "fake",
        [PY, str(HERE / "fake_openai_upstream.py"), "--port", "0"],
        env,
        tmp / "fake.log",
        stdout=subprocess.PIPE,
    )
    assert p.stdout is not None
    line = p.stdout.readline().decode().strip()
    if not line.startswith("READY "):
        raise SystemExit(f"fake upstream did not start: {line!r}; see {tmp / 'fake.log'}")
    return p, int(line.split()[1])


def engine_env(var_dir: Path, fake_port: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DATABASE_URL", "CLICKHOUSE_URL", "REDIS_URL", "OPENTRACY_TRACE_SPOOL_DIR", "ANTHROPIC_API_KEY"):
        env.pop(name, None)
    env.update(
        OPENTRACY_VAR_DIR=str(var_dir),
        OPENAI_BASE_URL=f"http://{HOST}:{fake_port}/v1",
        OPENAI_API_KEY="sk-bench-fake",
        OPENTRACY_LOCAL_MODEL_PRELOAD="false",
        DJANGO_SETTINGS_MODULE="opentracy_site.settings",
        DEBUG="false",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    cmd = [PY, "manage.py", *args]
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(['.venv/bin/python', 'manage.py', *args])}` failed ({r.returncode}):\n"
            f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        )
    return r.stdout


def set_up_engine(env: dict[str, str]) -> str:
    """Migrations, default project, a key. Returns the raw key."""
    manage(env, "migrate", "--noinput")
    manage(env, "migrate_clickhouse")
    manage(env, "bootstrap")
    out = manage(env, "create_api_key", "--project", "default", "--name", "bench")
    keys = [ln.strip() for ln in out.splitlines() if re.fullmatch(r"ot-\S+", ln.strip())]
    if not keys:
        raise RuntimeError(f"no key in create_api_key output: {out!r}")
    return keys[-1]


SERVERS = ("uvicorn", "granian", "daphne")


def server_cmd(server: str, port: int) -> list[str]:
    """The command serving opentracy_site.asgi:application on HOST:port with one process/worker,
    quiet logs and no access log. uvicorn is `make run`'s; granian and daphne are for comparison
    (bench/gateway_vs_litellm.py --compare-servers). daphne implements no ASGI lifespan."""
    app = "opentracy_site.asgi:application"
    if server == "uvicorn":
        return [
            *(PY, "-m", "uvicorn", app, "--host", HOST, "--port", str(port)),
            *("--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"),
            *("--lifespan", "on"),
        ]
    if server == "granian":
        return [
            *(PY, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port)),
            *("--workers", "1", "--loop", "uvloop", "--http", "1", "--log-level", "warning", "--no-access-log"),
            app,
        ]
    if server == "daphne":
        return [PY, "-m", "daphne", "-b", HOST, "-p", str(port), "-v", "0", app]
    raise ValueError(f"unknown server {server!r}; one of {', '.join(SERVERS)}")


def start_engine(
    procs: Procs, env: dict[str, str], tmp: Path, server: str = "uvicorn", log_name: str = "engine.log"
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = tmp / log_name
    p = procs.spawn("engine", server_cmd(server, port), env, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"engine exited ({p.returncode}) at start-up:\n{log.read_text()[-4000:]}")
        with suppress(OSError):
            if http_get(port, "/healthz", 1.0)[0] == 200:
                return p, port
        time.sleep(0.2)
    raise SystemExit(f"engine not ready after 90 s:\n{log.read_text()[-4000:]}")


# -- wrk ----------------------------------------------------------------------------------------
@dataclass
class WrkResult:
    label: str
    rps: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # non-2xx + socket errors
    cpu_ms_per_req: dict[str, float] = field(default_factory=dict)
    core_pct: dict[str, float] = field(default_factory=dict)  # CPU used / wall time, % of one core


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_script(tmp: Path, body: bytes, key: str | None, name: str = "post.lua") -> Path:
    lua = [
        'wrk.method = "POST"',
        f"wrk.body = '{body.decode()}'",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    if key:
        lua.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    path = tmp / name
    path.write_text("\n".join(lua) + "\n")
    return path


def run_wrk(
    label: str, port: int, lua: Path, threads: int, conns: int, seconds: float, cpu_pids: dict[str, int] | None = None
) -> WrkResult:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{conns}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        f"http://{HOST}:{port}{PATH}",
    ]
    cpu0, t0 = {n: cpu_seconds(pid) for n, pid in (cpu_pids or {}).items()}, time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    cpu1, wall = {n: cpu_seconds(pid) for n, pid in (cpu_pids or {}).items()}, time.monotonic() - t0
    out = r.stdout
    if r.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({r.returncode}): {out}\n{r.stderr}")
    lat = {m[1]: float(m[2]) * UNITS[m[3]] for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    res = WrkResult(
        label,
        float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        requests,
        lat["50"],
        lat["90"],
        lat["99"],
        errors,
    )
    for n in cpu0:
        res.cpu_ms_per_req[n] = (cpu1[n] - cpu0[n]) * 1000 / max(requests, 1)
        res.core_pct[n] = (cpu1[n] - cpu0[n]) * 100 / wall
    return res

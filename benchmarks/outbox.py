"""The outbox's cost in one run: enqueue latency and throughput, and delivery from the outbox
by worker processes against ``Mailer.send_many`` straight to the same server.

    python benchmarks/outbox.py [--quick] [--count N] [--stores sqlite,redis]

Starts Postfix's ``smtp-sink`` on 127.0.0.1 and, when ``asyncmail.outbox._redis`` exists and
``redis-server`` is on PATH, a ``redis-server`` of its own (a temp dir, a free port, AOF on).
Prints the tables, the machine and the goal verdicts; writes ``benchmarks/out/outbox.json``
and the chart ``benchmarks/outbox.png`` (``benchmarks/out/outbox.png`` with ``--quick``).
See benchmarks/README.md. Run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
WORKER_PY = HERE / "_outbox_worker.py"
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import psutil  # noqa: E402
from _outbox_report import (  # noqa: E402
    BASELINE_PROCESSES,
    WORKER_COUNTS,
    baselines,
    chart,
    delivery_table,
    drift,
    enqueue_table,
    goals,
    limits,
)
from _outbox_worker import message  # noqa: E402
from run import Sink, machine  # noqa: E402

import asyncmail  # noqa: E402
from asyncmail import Outbox, OutboxState  # noqa: E402

CONCURRENCY = 10  # per worker process, and per send_many process
ENQUEUERS = 50
WARMUP = 50  # enqueue calls before the latency sample starts
POLL = 0.05  # seconds between statistics() polls
READY_TIMEOUT = 60.0
FULL = {"latency": 5_000, "throughput": 10_000, "count": 10_000}
QUICK = {"latency": 300, "throughput": 1_000, "count": 1_000}
REDIS_SETTINGS = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": "",  # no RDB snapshots: a fork mid-run would measure the snapshot, not the outbox
}

_children: set[subprocess.Popen[bytes]] = set()


def _kill_children() -> None:
    for proc in list(_children):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _children.discard(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- redis-server ----------------------------------------------------------------------------------


def redis_unavailable() -> str | None:
    """None when the Redis half can run, else why not."""
    if importlib.util.find_spec("asyncmail.outbox._redis") is None:
        return "asyncmail.outbox._redis does not exist here (the Redis store has not landed)"
    if importlib.util.find_spec("redis") is None:
        return "the redis package is not installed (pip install 'redis>=5')"
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH"
    return None


class RedisServer:
    """``redis-server`` on 127.0.0.1, a free port, AOF in a temp dir; removed on close."""

    def __init__(self) -> None:
        import redis

        binary = shutil.which("redis-server")
        assert binary is not None
        self.dir = tempfile.mkdtemp(prefix="asyncmail-bench-redis-")
        self.port = free_port()
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir]
        for name, value in REDIS_SETTINGS.items():
            cmd += [f"--{name}", value]
        cmd += ["--logfile", os.path.join(self.dir, "redis.log")]
        self.proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
        _children.add(self.proc)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start: {cmd}") from None
                time.sleep(0.1)
        names = ["appendonly", "appendfsync", "save", "aof-use-rdb-preamble"]
        names += ["auto-aof-rewrite-percentage", "auto-aof-rewrite-min-size", "maxmemory"]
        got: dict[str, str] = {}
        for name in names:
            got.update((str(k), str(v)) for k, v in self.client.config_get(name).items())
        self.settings = got
        self.version = str(self.client.info("server")["redis_version"])

    def url(self, queue: str) -> str:
        return f"redis://127.0.0.1:{self.port}/0?queue={queue}"

    def persistence(self) -> dict[str, Any]:
        info = self.client.info("persistence")
        keys = ("aof_rewrites", "aof_rewrite_in_progress", "rdb_bgsave_in_progress")
        return {k: info.get(k) for k in keys}

    def flush(self) -> None:
        self.client.flushall()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        _children.discard(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- stores ----------------------------------------------------------------------------------------


class Stores:
    """Fresh outbox URLs: a new SQLite file, or a new Redis queue (the server flushed first)."""

    def __init__(self, redis: RedisServer | None) -> None:
        self.redis = redis
        self.tmp = tempfile.mkdtemp(prefix="asyncmail-bench-outbox-", dir="/tmp")
        self._n = 0

    def fresh(self, store: str) -> str:
        self._n += 1
        if store == "sqlite":
            return f"sqlite:///{self.tmp}/outbox-{self._n}.db"
        assert self.redis is not None
        self.redis.flush()
        return self.redis.url(f"bench{self._n}")

    def drop(self, url: str) -> None:
        if url.startswith("sqlite:"):
            path = url.removeprefix("sqlite:///")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(path + suffix)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def filesystem_of(path: str) -> str:
    """The file system type and device a path lives on (fsync's cost depends on it)."""
    best = None
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") + "/"
        if (path.rstrip("/") + "/").startswith(mount) and (
            best is None or len(mount) > len(best.mountpoint.rstrip("/") + "/")
        ):
            best = part
    return "?" if best is None else f"{best.fstype} on {best.device} ({best.mountpoint})"


# -- enqueue ---------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


async def enqueue_latency(url: str, count: int) -> dict[str, Any]:
    """``count`` sequential ``await outbox.enqueue(message)``, each timed (the build is not)."""
    latencies = []
    async with Outbox(url) as outbox:
        for i in range(WARMUP + count):
            msg = message(i)
            started = time.perf_counter()
            await outbox.enqueue(msg)
            if i >= WARMUP:
                latencies.append(time.perf_counter() - started)
    latencies.sort()
    ms = [1000 * x for x in latencies]
    return {
        "calls": count,
        "p50_ms": percentile(ms, 0.50),
        "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": ms[-1],
        "mean_ms": sum(ms) / len(ms),
    }


async def enqueue_concurrently(url: str, count: int, enqueuers: int = ENQUEUERS) -> float:
    """Seconds for ``enqueuers`` tasks to enqueue ``count`` messages (each built, then stored)."""
    numbers = iter(range(count))
    async with Outbox(url) as outbox:

        async def enqueuer() -> None:
            for i in numbers:
                await outbox.enqueue(message(i))

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(enqueuers):
                tg.start_soon(enqueuer)
        return time.perf_counter() - started


# -- child processes -------------------------------------------------------------------------------


def spawn(cmd: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    _children.add(proc)
    return proc


def read_lines(procs: list[subprocess.Popen[bytes]], timeout: float, what: str) -> list[str]:
    """The next line of each child's stdout (in the children's order)."""
    lines: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while len(lines) < len(procs):
        waiting = [p for p in procs if p.pid not in lines]
        for p in waiting:
            if p.poll() is not None:
                raise RuntimeError(f"a child exited ({p.returncode}) before {what}: {p.args!r}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"no {what} from {len(waiting)} children in {timeout:.0f} s")
        pipes = {p.stdout: p for p in waiting if p.stdout is not None}
        readable, _, _ = select.select(list(pipes), [], [], min(left, 0.5))
        for pipe in readable:
            lines[pipes[pipe].pid] = pipe.readline().decode(errors="replace").strip()
    return [lines[p.pid] for p in procs]


def go(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        _children.discard(p)


def log_tail(log: IO[bytes]) -> str:
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    return " / ".join(lines[-3:])[:300]


class CpuClock:
    """CPU seconds of chosen processes (and the worker processes' threads) over an interval."""

    def __init__(self, labelled: dict[str, int], workers: list[int]) -> None:
        self.procs = {label: psutil.Process(pid) for label, pid in labelled.items()}
        self.workers = [psutil.Process(pid) for pid in workers]
        self.top_others: list[str] = []

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            return float(t.user + t.system)
        return 0.0

    def _snapshot(self) -> dict[str, Any]:
        threads: dict[int, float] = {}
        main = 0.0
        for p in self.workers:
            with contextlib.suppress(psutil.Error):
                for t in p.threads():
                    if t.id == p.pid:
                        main += t.user_time + t.system_time
                    else:
                        threads[t.id] = t.user_time + t.system_time
        return {
            "procs": {label: self._cpu(p) for label, p in self.procs.items()},
            "workers": sum(self._cpu(p) for p in self.workers),
            "workers_write_bytes": sum(self._written(p) for p in self.workers),
            "workers_main_thread": main,
            "workers_other_threads": sum(threads.values()),
            "system": psutil.cpu_times(),
            "all": self._everyone(),
        }

    @staticmethod
    def _written(p: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            return float(p.io_counters().write_bytes)
        return 0.0

    @staticmethod
    def _everyone() -> dict[int, tuple[bool, float, str]]:
        """Every process: (is a kernel thread, CPU seconds so far, its name)."""
        out = {}
        for p in psutil.process_iter(["ppid", "cpu_times", "name"]):
            times = p.info["cpu_times"]
            if times is not None:
                kernel = p.pid == 2 or p.info["ppid"] == 2
                out[p.pid] = (kernel, float(times.user + times.system), p.info["name"] or "?")
        return out

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, float]:
        end, start = self._snapshot(), self._start
        out = {f"{k}_s": end["procs"][k] - start["procs"][k] for k in self.procs}
        for k in ("workers", "workers_main_thread", "workers_other_threads"):
            out[f"{k}_s"] = end[k] - start[k]
        out["workers_write_bytes"] = end["workers_write_bytes"] - start["workers_write_bytes"]
        ours = {p.pid for p in self.workers} | {p.pid for p in self.procs.values()}
        out["kernel_threads_s"] = out["other_processes_s"] = 0.0
        others: list[tuple[float, str]] = []
        for pid, (kernel, cpu, name) in end["all"].items():
            if pid in ours:
                continue
            used = cpu - start["all"].get(pid, (kernel, 0.0, name))[1]  # (new: all they used)
            out["kernel_threads_s" if kernel else "other_processes_s"] += max(0.0, used)
            if used > 0 and not kernel:
                others.append((used, f"{name}[{pid}]"))
        self.top_others = [f"{name} {cpu:.2f} s" for cpu, name in sorted(others)[-3:][::-1]]
        s0, s1 = start["system"], end["system"]
        guest = getattr(s1, "guest", 0.0) + getattr(s1, "guest_nice", 0.0)
        guest -= getattr(s0, "guest", 0.0) + getattr(s0, "guest_nice", 0.0)
        total = sum(s1) - sum(s0) - guest  # (guest time is counted in user already)
        idle = s1.idle - s0.idle
        iowait = getattr(s1, "iowait", 0.0) - getattr(s0, "iowait", 0.0)
        steal = getattr(s1, "steal", 0.0) - getattr(s0, "steal", 0.0)
        if total > 0:
            out["machine_busy_frac"] = (total - idle - iowait - steal) / total
            out["machine_iowait_frac"] = iowait / total
            out["machine_steal_frac"] = steal / total
        return out


# -- the baseline: send_many straight to the sink --------------------------------------------------


def baseline(ctx: Context, processes: int, count: int) -> dict[str, Any]:
    """``processes`` processes each ``send_many`` a share of ``count`` messages, concurrency 10."""
    row: dict[str, Any] = {"kind": "send_many", "processes": processes, "count": count}
    shares = [count // processes + (i < count % processes) for i in range(processes)]
    offsets = [sum(shares[:i]) for i in range(processes)]
    before = ctx.sink.messages()
    logs = [tempfile.TemporaryFile() for _ in range(processes)]  # noqa: SIM115 (closed below)
    cmd = [sys.executable, str(WORKER_PY), "send-many", "--smtp", ctx.smtp_url]
    cmd += ["--concurrency", str(CONCURRENCY)]
    procs = [
        spawn([*cmd, "--count", str(n), "--offset", str(off)], log)
        for n, off, log in zip(shares, offsets, logs, strict=True)
    ]
    try:
        read_lines(procs, READY_TIMEOUT, "ready line")
        clock = ctx.cpu_clock([p.pid for p in procs])
        clock.start()
        started = time.perf_counter()
        go(procs)
        results = [json.loads(line) for line in read_lines(procs, ctx.cap, "result line")]
        wall = time.perf_counter() - started
        row["cpu"] = clock.stop()
    except (RuntimeError, ValueError) as exc:
        row["error"] = f"{exc}; stderr: {' | '.join(log_tail(log) for log in logs)}"
        return row
    finally:
        stop(procs)
        for log in logs:
            log.close()
    delivered = sum(r["delivered"] for r in results)
    row |= {"delivered": delivered, "failed": sum(r["failed"] for r in results)}
    row |= {"wall_s": wall, "msg_per_s": delivered / wall}
    row["child_wall_s"] = [r["wall_s"] for r in results]
    row["sink_delivered"] = ctx.sink.messages() - before
    return row


# -- delivery from the outbox by worker processes --------------------------------------------------


def cli_worker_available() -> bool:
    """True when ``python -m asyncmail worker --help`` succeeds in this tree."""
    try:
        probe = subprocess.run(
            [sys.executable, "-m", "asyncmail", "worker", "--help"],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def worker_command(ctx: Context, url: str) -> list[str]:
    if ctx.cli_worker:
        cmd = [sys.executable, "-m", "asyncmail", "worker", "--outbox", url, "--url"]
    else:
        cmd = [sys.executable, str(WORKER_PY), "worker", "--outbox", url, "--smtp"]
    return [*cmd, ctx.smtp_url, "--concurrency", str(CONCURRENCY)]


async def watch(
    url: str, count: int, procs: list[subprocess.Popen[bytes]], clock: CpuClock, cap: float
) -> dict[str, Any]:
    """Start the clock (and say go), poll ``statistics()`` every 50 ms until all are settled."""
    samples: list[tuple[float, int]] = []
    async with Outbox(url) as outbox:
        clock.start()
        started = time.perf_counter()
        go(procs)
        while True:
            stats = await outbox.statistics()
            now = time.perf_counter() - started
            done = stats.counts.get(OutboxState.DELIVERED, 0)
            settled = done + sum(
                stats.counts.get(s, 0) for s in (OutboxState.FAILED, OutboxState.UNKNOWN)
            )
            samples.append((now, done))
            if settled >= count:
                break
            if now > cap:
                return {"error": f"time cap {cap:.0f} s: {settled:,}/{count:,} settled"}
            if dead := [p for p in procs if p.poll() is not None]:
                return {"error": f"{len(dead)} worker(s) exited ({dead[0].returncode})"}
            await anyio.sleep(POLL)
        wall = time.perf_counter() - started
        cpu = clock.stop()
    cpu_others = clock.top_others
    first = next((t for t, d in samples if d > 0), None)
    counts = {str(k): v for k, v in stats.counts.items() if v}
    return {
        "wall_s": wall,
        "delivered": done,
        "counts": counts,
        "cpu": cpu,
        "first_s": first,
        "busiest_other_processes": cpu_others,
        "polls": len(samples),
    }


def deliver(ctx: Context, store: str, workers: int, count: int) -> dict[str, Any]:
    """Pre-fill a fresh outbox with ``count`` messages, then time ``workers`` processes on it."""
    row: dict[str, Any] = {"kind": "outbox", "store": store, "workers": workers, "count": count}
    url = ctx.stores.fresh(store)
    try:
        row["prefill_msg_per_s"] = count / anyio.run(enqueue_concurrently, url, count)
        before = ctx.sink.messages()
        persistence = ctx.redis.persistence() if ctx.redis and store == "redis" else None
        logs = [tempfile.TemporaryFile() for _ in range(workers)]  # noqa: SIM115 (closed below)
        spawned = time.perf_counter()
        procs = [spawn(worker_command(ctx, url), log) for log in logs]
        try:
            if not ctx.cli_worker:
                read_lines(procs, READY_TIMEOUT, "ready line")
            row["startup_s"] = time.perf_counter() - spawned
            clock = ctx.cpu_clock([p.pid for p in procs])
            row |= anyio.run(watch, url, count, procs, clock, ctx.cap)
        except RuntimeError as exc:
            row["error"] = str(exc)
        finally:
            stop(procs)
            if "error" in row:
                row["error"] += "; stderr: " + " | ".join(log_tail(log) for log in logs)
            for log in logs:
                log.close()
        if ctx.cli_worker:  # no ready line: the clock ran from the spawn
            row["note"] = "asyncmail worker CLI: timed from process start"
        elif "startup_s" in row:
            row["note"] = f"start-up to ready {row['startup_s']:.2f} s, not timed"
        if "wall_s" in row:
            row["msg_per_s"] = row["delivered"] / row["wall_s"]
            row["sink_delivered"] = ctx.sink.messages() - before
        if persistence is not None and ctx.redis is not None:
            after = ctx.redis.persistence()
            if after != persistence:
                row["redis_persistence"] = {"before": persistence, "after": after}
    finally:
        ctx.stores.drop(url)
    return row


# -- the run ---------------------------------------------------------------------------------------


class Context:
    def __init__(
        self, sink: Sink, redis: RedisServer | None, stores: Stores, cap: float, cli: bool
    ) -> None:
        self.sink = sink
        self.redis = redis
        self.stores = stores
        self.cap = cap
        self.cli_worker = cli
        self.smtp_url = f"smtp://127.0.0.1:{sink.port}?tls=none"

    def cpu_clock(self, workers: list[int]) -> CpuClock:
        labelled = {"sink": self.sink.proc.pid, "parent": os.getpid()}
        if self.redis is not None:
            labelled["redis"] = self.redis.proc.pid
        return CpuClock(labelled, workers)


def info_block(argv: list[str]) -> dict[str, Any]:
    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(ROOT), *a], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    info: dict[str, Any] = dict(machine())
    info.pop("loadavg_at_start", None)
    info["loadavg_before"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    info["command"] = "python benchmarks/outbox.py " + " ".join(argv)
    dirty = git("status", "--porcelain", "--", "asyncmail", "benchmarks")
    info["commit"] = git("rev-parse", "--short", "HEAD") or "? (not a git checkout)"
    if dirty:
        info["commit"] += " (+ uncommitted changes in asyncmail/ or benchmarks/)"
    info["asyncmail_from"] = str(Path(asyncmail.__file__).parent)
    info["python_exe"] = sys.executable
    info["platform"] = platform.platform()
    return info


def run(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        if getattr(args, key, None):
            sizes[key] = getattr(args, key)
    sink_bin = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")
    if sink_bin is None:
        raise SystemExit("smtp-sink not found: apt-get install -y postfix (benchmarks/README.md)")
    wanted = [s.strip() for s in args.stores.split(",") if s.strip()]
    skipped: dict[str, str] = {}
    if "redis" in wanted and (why := redis_unavailable()):
        skipped["redis"] = why
        wanted.remove("redis")
    for store, why in skipped.items():
        print(f"{store}: skipped: {why}", flush=True)
    cli = cli_worker_available()
    info["worker"] = (
        "python -m asyncmail worker (the CLI)" if cli else "benchmarks/_outbox_worker.py worker"
    )
    print(f"workers: {info['worker']}, concurrency {CONCURRENCY} each", flush=True)
    sink = Sink(sink_bin)
    redis = RedisServer() if "redis" in wanted else None
    stores = Stores(redis)
    info["sqlite_dir"] = f"{stores.tmp} on {filesystem_of(stores.tmp)}"
    info["sqlite_mode"] = "WAL, synchronous=FULL (asyncmail's default: durable commit)"
    info["sink"] = f"{sink_bin} -c -4 127.0.0.1:{sink.port} 1000"
    if redis is not None:
        info["redis"] = f"redis-server {redis.version} on 127.0.0.1:{redis.port}, " + ", ".join(
            f"{k}={v!r}" for k, v in redis.settings.items()
        )
        print(f"redis: {info['redis']}", flush=True)
    print(f"sqlite: {info['sqlite_dir']}, {info['sqlite_mode']}", flush=True)
    ctx = Context(sink, redis, stores, args.cap, cli)
    result: dict[str, Any] = {"sizes": sizes, "skipped": skipped, "enqueue": [], "rows": []}
    try:
        measure(ctx, wanted, sizes, result)
    finally:
        _kill_children()
        sink.close()
        if redis is not None:
            redis.close()
        stores.close()
    info["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return result


def measure(ctx: Context, stores: list[str], sizes: dict[str, int], result: dict[str, Any]) -> None:
    for store in stores:
        print(f"== enqueue, {store}", flush=True)
        url = ctx.stores.fresh(store)
        lat = anyio.run(enqueue_latency, url, sizes["latency"])
        ctx.stores.drop(url)
        url = ctx.stores.fresh(store)
        seconds = anyio.run(enqueue_concurrently, url, sizes["throughput"])
        ctx.stores.drop(url)
        lat |= {"store": store, "throughput_count": sizes["throughput"]}
        lat["throughput_msg_per_s"] = sizes["throughput"] / seconds
        result["enqueue"].append(lat)
        print(
            f"   p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms; "
            f"{lat['throughput_msg_per_s']:,.0f} msg/s with {ENQUEUERS} enqueuers",
            flush=True,
        )
    count = sizes["count"]
    # The baselines run before and after the outbox runs: their spread shows the drift.
    for phase in ("before", "after"):
        if phase == "after":
            for store in stores:
                for workers in WORKER_COUNTS:
                    print(f"== outbox, {store}, {workers} worker(s)", flush=True)
                    row = deliver(ctx, store, workers, count)
                    result["rows"].append(row)
                    print("   " + summary(row), flush=True)
        for processes in BASELINE_PROCESSES:
            print(f"== send_many ({phase}), {processes} process(es)", flush=True)
            row = baseline(ctx, processes, count) | {"phase": phase}
            result["rows"].append(row)
            print("   " + summary(row), flush=True)


def summary(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"ERROR: {row['error']}"
    text = f"delivered {row['delivered']:,} in {row['wall_s']:.2f} s: {row['msg_per_s']:,.0f} msg/s"
    if row["sink_delivered"] != row["delivered"]:
        text += f" (but the sink counted {row['sink_delivered']:,})"
    else:
        text += " (the sink agrees)"
    return text


# -- report ----------------------------------------------------------------------------------------


def report(result: dict[str, Any], info: dict[str, Any], chart_path: Path) -> None:
    base = baselines(result["rows"])
    ncpu = int(info.get("nproc") or os.cpu_count() or 1)
    lines = [
        "## Delivery: outbox worker processes vs send_many",
        "",
        *delivery_table(result["rows"], base),
        "",
        *[f"- {x}" for x in drift(result["rows"])],
        "",
        "## Enqueue",
        "",
        *enqueue_table(result["enqueue"]),
        "",
        "## Goals",
        "",
        *[f"- {g}" for g in goals(result, base)],
        "",
        "## What limits it",
        "",
        *[f"- {x}" for x in limits(result["rows"], ncpu)],
        "",
        "## Machine and run",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        *[f"- skipped {k}: {v}" for k, v in result["skipped"].items()],
    ]
    print()
    print("\n".join(lines))
    OUT.mkdir(exist_ok=True)
    (OUT / "outbox.json").write_text(
        json.dumps({"machine": info, **result, "baselines": base}, indent=1, default=str)
    )
    date = info["date"]
    title = (
        f"asyncmail outbox, {info['commit']}, {date}: {info['nproc']} cores ({info['cpu']}), "
        f"Python {info['python']}, N={result['sizes']['count']:,}"
    )
    chart(result, base, chart_path, title)
    print(f"\nwrote {OUT / 'outbox.json'} and {chart_path}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    p.add_argument("--count", type=int, help="messages per delivery run (default 10,000)")
    p.add_argument("--latency", type=int, help="sequential enqueue calls timed (default 5,000)")
    p.add_argument("--throughput", type=int, help="messages for the enqueue throughput")
    p.add_argument("--stores", default="sqlite,redis", help="comma-separated: sqlite,redis")
    p.add_argument("--cap", type=float, default=600.0, help="seconds a delivery run may take")
    p.add_argument("--chart", help="where to write the PNG")
    args = p.parse_args(argv)
    chart_path = Path(args.chart or (OUT / "outbox.png" if args.quick else HERE / "outbox.png"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    info = info_block(argv)
    try:
        result = run(args, info)
    except KeyboardInterrupt:
        print("interrupted: stopped the workers, the sink and redis-server", file=sys.stderr)
        return 130
    report(result, info, chart_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

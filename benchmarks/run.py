"""The throughput comparison in one command: asyncmail against its peers on one sink.

    python benchmarks/run.py [--scenarios S1,S2,S3,S4,S5,S6] [--quick]

Starts Postfix's ``smtp-sink`` on 127.0.0.1 (and a LatencyProxy in front of it for the RTT
scenarios); S5 and S6 run against ``benchmarks/_chunking_sink.py`` instead, a minimal sink
that offers CHUNKING (smtp-sink does not), where asyncmail sends by BDAT and the peers by
DATA. It runs every peer in its own subprocess (benchmarks/_peers.py, or ``smtp-source``),
and writes a table to stdout, ``benchmarks/out/results.json``, ``benchmarks/out/results.md`` and
the chart ``benchmarks/results.png``. See benchmarks/README.md. Run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
PEERS_PY = HERE / "_peers.py"
SAMPLE_EVERY = 0.5
GRACE = 60.0  # seconds past a peer's time cap before it is killed

sys.path.insert(0, str(ROOT))


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    count: int
    time_cap: float
    rtt: float = 0.0
    mode: str = "throughput"  # or "latency" (sequential requests)
    sink: str = "smtp-sink"  # or "chunking" (benchmarks/_chunking_sink.py)


SCENARIOS = {
    "S1": Scenario("S1", "loopback burst, 10 connections", 20_000, 30.0),
    "S2": Scenario("S2", "relay at 10 ms RTT, 10 connections", 2_000, 30.0, rtt=0.010),
    "S3": Scenario("S3", "send_many over a generator, memory", 1_000_000, 600.0),
    "S4": Scenario("S4", "web request at 10 ms RTT, warm pool", 300, 60.0, 0.010, "latency"),
    "S5": Scenario(
        "S5",
        "S2 to a CHUNKING sink: 10 ms RTT, 10 connections",
        10_000,
        30.0,
        0.010,
        sink="chunking",
    ),
    "S6": Scenario(
        "S6",
        "S2 to a CHUNKING sink at 50 ms RTT, 10 connections",
        4_000,
        30.0,
        0.050,
        sink="chunking",
    ),
}
QUICK = {
    "S1": (1_000, 10.0),
    "S2": (200, 10.0),
    "S3": (20_000, 60.0),
    "S4": (30, 20.0),
    "S5": (500, 10.0),
    "S6": (200, 10.0),
}

# (peer, loop) per scenario; loop is "asyncio", "uvloop" or "-" (not Python).
THROUGHPUT_PEERS = [
    ("smtplib", "-"),
    ("aiosmtplib-send", "asyncio"),
    ("aiosmtplib-send", "uvloop"),
    ("fastapi-mail", "asyncio"),
    ("fastapi-mail", "uvloop"),
    ("aiosmtplib-pool", "asyncio"),
    ("aiosmtplib-pool", "uvloop"),
    ("smtp-source", "-"),
    ("asyncmail", "asyncio"),
    ("asyncmail", "uvloop"),
]
PEERS_BY_SCENARIO = {
    "S1": THROUGHPUT_PEERS,
    "S2": THROUGHPUT_PEERS,
    "S3": [("asyncmail", "asyncio")],
    "S5": THROUGHPUT_PEERS,
    "S6": THROUGHPUT_PEERS,
    "S4": [
        ("smtplib", "-"),
        ("aiosmtplib-send", "asyncio"),
        ("aiosmtplib-pool", "asyncio"),
        ("asyncmail", "asyncio"),
        ("asyncmail", "uvloop"),
    ],
}
LABELS = {
    "smtplib": "smtplib, 1 connection",
    "aiosmtplib-send": "aiosmtplib.send() per message",
    "fastapi-mail": "fastapi-mail",
    "aiosmtplib-pool": "hand-held aiosmtplib.SMTP",
    "smtp-source": "Postfix smtp-source (C)",
    "asyncmail": "asyncmail",
}

_children: set[subprocess.Popen[bytes]] = set()


def _kill_children() -> None:
    for p in list(_children):
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        _children.discard(p)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the sink ------------------------------------------------------------------------------------


class Sink:
    """A sink on 127.0.0.1 counting ``mesg=N`` into a file we read between runs.

    ``smtp-sink -c``, or with ``chunking`` benchmarks/_chunking_sink.py (which prints the same).
    """

    def __init__(self, binary: str, *, chunking: bool = False) -> None:
        self.binary = binary
        self.port = _free_port()
        # Lives as long as the sink; close() removes it.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="smtp-sink-", suffix=".log", delete=False
        )
        if chunking:
            cmd = [sys.executable, str(HERE / "_chunking_sink.py"), f"127.0.0.1:{self.port}"]
        else:
            cmd = [binary, "-c", "-4"]
            if os.geteuid() == 0:
                cmd += ["-u", pwd.getpwuid(0).pw_name]
            cmd += [f"127.0.0.1:{self.port}", "1000"]
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        _children.add(self.proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    banner = s.recv(200)
                    s.sendall(b"EHLO probe\r\n")
                    ehlo = b""
                    while b"250 " not in ehlo:
                        got = s.recv(1000)
                        if not got:
                            raise OSError("the sink closed the connection")
                        ehlo += got
                    s.sendall(b"QUIT\r\n")
                if b"PIPELINING" not in ehlo:
                    raise RuntimeError("the sink does not advertise PIPELINING")
                if chunking and b"CHUNKING" not in ehlo:
                    raise RuntimeError("the sink does not advertise CHUNKING")
                self.banner = banner.decode(errors="replace").strip()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"smtp-sink did not start: {cmd}") from None
                time.sleep(0.1)

    def messages(self) -> int:
        """Messages the sink has received so far (its ``-c`` counter)."""
        time.sleep(0.3)  # counters are written when sessions end
        text = Path(self._log.name).read_text(errors="replace")
        found = re.findall(r"mesg=(\d+)", text)
        return int(found[-1]) if found else 0

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        _children.discard(self.proc)
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


def noop_round_trips(port: int, n: int = 50) -> dict[str, float]:
    """p50/p99 of NOOP round trips through the proxy: what one "RTT" really costs here."""
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendall(b"NOOP\r\n")
            f.readline()
            times.append(time.perf_counter() - t0)
        s.sendall(b"QUIT\r\n")
        f.readline()
        f.close()
    times.sort()
    return {"noop_rtt_p50_ms": 1000 * times[n // 2], "noop_rtt_p99_ms": 1000 * times[-1]}


@contextlib.contextmanager
def maybe_proxy(port: int, rtt: float, calibration: dict[str, float]) -> Iterator[int]:
    """The port peers should use: the sink's, or a LatencyProxy's in front of it."""
    if rtt <= 0:
        yield port
        return
    from asyncmail.testing._proxy import LatencyProxy

    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop  # the proxy should not be what limits the peers
    with LatencyProxy("127.0.0.1", port, rtt=rtt).run_in_thread(loop_factory=factory) as proxy:
        calibration.update(noop_round_trips(proxy.port))
        yield proxy.port


# -- running one peer ------------------------------------------------------------------------------


def asyncmail_available() -> str | None:
    """None if ``from asyncmail import Mailer`` works in a fresh interpreter, else why not."""
    probe = subprocess.run(
        [sys.executable, "-c", "from asyncmail import Mailer, Message, Status"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HERE,  # not ROOT: "-c" puts the cwd first on sys.path, hiding --asyncmail-rev
    )
    if probe.returncode == 0:
        return None
    return (probe.stderr.strip().splitlines() or ["import failed"])[-1]


def snapshot_asyncmail(rev: str) -> tuple[str, str]:
    """Export ``asyncmail/`` at git ``rev`` to a temp dir and put it first on children's path.

    The work tree may be mid-edit by others; a committed snapshot is a stable thing to measure.
    Returns the directory (to remove afterwards) and a description of the version.
    """
    tmp = tempfile.mkdtemp(prefix="asyncmail-snapshot-")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "asyncmail"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        x for x in (tmp, os.environ.get("PYTHONPATH", "")) if x
    )

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *a], capture_output=True, text=True, check=True
        ).stdout.strip()

    at = git("rev-parse", "--short", rev)
    last = git("log", "-1", "--format=%h %s", rev, "--", "asyncmail")
    return tmp, f"commit {at} (snapshot, not the work tree); asyncmail/ last changed in {last}"


def asyncmail_version() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", "--", "asyncmail"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "asyncmail"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return rev + (" (+ uncommitted changes in asyncmail/)" if dirty else "")


def run_child(cmd: list[str], time_cap: float) -> dict[str, Any]:
    """Run one peer process; sample its RSS; return wall, rusage CPU, peak and sampled RSS."""
    import psutil

    err = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, after the child is reaped)
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err
    )
    _children.add(proc)
    ps = psutil.Process(proc.pid)
    samples: list[tuple[float, float]] = []
    next_sample = started + SAMPLE_EVERY
    killed = False
    hwm = 0.0
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            hwm = max(hwm, _vm_hwm_mb(proc.pid))
            if now >= next_sample:
                with contextlib.suppress(psutil.Error):
                    samples.append((now - started, ps.memory_info().rss / 2**20))
                next_sample = now + SAMPLE_EVERY
            if now - started > time_cap + GRACE and not killed:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.05)
    finally:
        _children.discard(proc)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    err.close()
    return {
        "returncode": proc.returncode,
        "killed": killed,
        "wall_total_s": time.perf_counter() - started,
        "cpu_total_s": usage.ru_utime + usage.ru_stime,
        # Not ru_maxrss: Linux carries it across exec, so it would report this parent's RSS.
        "peak_rss_mb": max(hwm, max((m for _, m in samples), default=0.0)),
        "rss_samples": samples,
        "stderr_tail": stderr.strip().splitlines()[-3:],
    }


def _vm_hwm_mb(pid: int | str) -> float:
    """Peak RSS of the process's current image (VmHWM), in MB; 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def run_peer(
    sc: Scenario, peer: str, loop: str, port: int, sink: Sink, smtp_source: str | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": sc.name, "peer": peer, "loop": loop, "label": LABELS[peer]}
    if loop == "uvloop" and not _has_uvloop():
        return row | {"skipped": "uvloop not installed (pip install 'asyncmail[speed]')"}
    if peer == "asyncmail" and (why := asyncmail_available()):
        return row | {"skipped": f"asyncmail.Mailer not available: {why}"}
    before = sink.messages()
    if peer == "smtp-source":
        if smtp_source is None:
            return row | {"skipped": "smtp-source not found (apt-get install postfix)"}
        sessions = 1 if sc.mode == "latency" else 10
        cmd = [smtp_source, "-4", "-d", "-s", str(sessions), "-m", str(sc.count), "-l", "2048"]
        cmd += ["-M", "bench.example.com", "-f", "news@bench.example.com"]
        cmd += ["-t", "reader@bench.example.com", f"127.0.0.1:{port}"]
        res = run_child(cmd, sc.time_cap)
        delivered = sink.messages() - before
        res |= {"sent": sc.count, "delivered": delivered, "wall_s": res["wall_total_s"]}
        res |= {"cpu_s": res["cpu_total_s"], "capped": False, "errors": {}}
    else:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            out = tmp.name
        concurrency = 1 if sc.mode == "latency" else 10
        cmd = [sys.executable, str(PEERS_PY), peer, "--port", str(port)]
        cmd += ["--count", str(sc.count), "--time-cap", str(sc.time_cap)]
        cmd += ["--concurrency", str(concurrency), "--mode", sc.mode, "--out", out]
        if loop == "uvloop":
            cmd.append("--uvloop")
        res = run_child(cmd, sc.time_cap)
        try:
            res |= json.loads(Path(out).read_text())
            res["peak_rss_mb"] = max(res["peak_rss_mb"], res.pop("vm_hwm_mb", 0.0))
        except (OSError, ValueError):
            tail = " / ".join(x.strip(" |+-") for x in res["stderr_tail"])
            res |= {"error": f"peer wrote no result: {tail[:150]}", "sent": 0, "delivered": 0}
        finally:
            with contextlib.suppress(OSError):
                os.unlink(out)
        res["sink_delivered"] = sink.messages() - before
    row |= res
    if row.get("delivered") and row.get("wall_s"):
        row["msg_per_s"] = row["delivered"] / row["wall_s"]
        row["cpu_s_per_1k"] = 1000 * row["cpu_s"] / row["delivered"]
    lat = sorted(row.pop("latencies", None) or [])
    if lat:
        row["p50_ms"] = 1000 * statistics.median(lat)
        row["p99_ms"] = 1000 * lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    samples = row.get("rss_samples") or []
    samples = [s for s in samples if s[1] > 0]
    if samples:
        row["rss_start_mb"] = samples[0][1]
        row["rss_end_mb"] = samples[-1][1]
    return row


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# -- report ----------------------------------------------------------------------------------------


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Ratio to the best *peer* (not asyncmail) in the same scenario of the same run."""
    for sc in {r["scenario"] for r in rows}:
        mine = [r for r in rows if r["scenario"] == sc]
        peers = [r for r in mine if r["peer"] != "asyncmail"]
        if any("p50_ms" in r for r in peers):
            best = min((r["p50_ms"] for r in peers if "p50_ms" in r), default=None)
            for r in mine:
                if best and "p50_ms" in r:
                    r["ratio"] = best / r["p50_ms"]  # > 1: faster than the best peer
        else:
            best = max((r.get("msg_per_s", 0) for r in peers), default=0)
            for r in mine:
                if best and "msg_per_s" in r:
                    r["ratio"] = r["msg_per_s"] / best


def goals(rows: list[dict[str, Any]], link_rtt: dict[str, float]) -> list[str]:
    def find(sc: str, loop: str) -> dict[str, Any] | None:
        for r in rows:
            if r["scenario"] == sc and r["peer"] == "asyncmail" and r["loop"] == loop:
                return r
        return None

    out = []

    def verdict(name: str, got: float | None, want: float, unit: str, higher: bool = True) -> None:
        if got is None:
            out.append(f"{name}: not measured (see the row's note)")
            return
        met = got >= want if higher else got <= want
        d = 2 if unit == "ms" else 1
        miss = "" if met else f" — missed by {abs(want - got):,.{d}f} {unit}"
        result = "MET" if met else "NOT MET"
        out.append(f"{name}: {got:,.{d}f} {unit} vs goal {want:,.{d}f} → {result}{miss}")

    for loop, want in (("asyncio", 7000), ("uvloop", 10000)):
        r = find("S1", loop)
        if r is not None:
            verdict(f"S1 ({loop})", r.get("msg_per_s"), want, "msg/s")
            if r.get("cpu_s_per_1k") is not None:
                out.append(f"S1 ({loop}) CPU per message: {r['cpu_s_per_1k'] * 1000:,.1f} µs")
    r = find("S2", "asyncio")
    if r is not None:
        verdict("S2 (asyncio)", r.get("msg_per_s"), 800, "msg/s")
        if "S2" in link_rtt and r.get("msg_per_s") is not None:
            # One round trip per message: the rate scales with the link's real round trip,
            # which the proxy's late timers stretch past the configured 10 ms (as for S4).
            verdict(
                f"S2 (asyncio) vs 800 × 10 ms / measured link RTT ({link_rtt['S2']:.2f} ms)",
                r.get("msg_per_s"),
                800 * 10 / link_rtt["S2"],
                "msg/s",
            )
    for sc, want in (("S5", 3000), ("S6", 1000)):
        for loop in ("asyncio", "uvloop"):
            r = find(sc, loop)
            if r is not None:
                verdict(f"{sc} ({loop}, BDAT)", r.get("msg_per_s"), want, "msg/s")
    r = find("S3", "asyncio")
    if r is not None:
        verdict("S3 peak RSS", r.get("peak_rss_mb"), 150, "MB", higher=False)
        if r.get("rss_samples"):
            # (a sample of 0 MB is the process exiting, as in run_peer: left out)
            rss = [m for _, m in r["rss_samples"] if m > 0]
            tail = rss[len(rss) // 4 :]
            if tail:
                out.append(
                    f"S3 flatness: RSS over the last 3/4 of the run {min(tail):.1f}–"
                    f"{max(tail):.1f} MB (spread {max(tail) - min(tail):.1f} MB)"
                )
    sc4 = SCENARIOS["S4"]
    for loop in ("asyncio", "uvloop"):
        r = find("S4", loop)
        if r is not None:
            verdict(f"S4 p50 ({loop})", r.get("p50_ms"), 2000 * sc4.rtt + 2, "ms", higher=False)
            if "S4" in link_rtt and r.get("p50_ms") is not None:
                # The proxy's timers wake up to ~1 ms late per hop; judge against the real link too.
                verdict(
                    f"S4 p50 ({loop}) vs 2 × measured link RTT ({link_rtt['S4']:.2f} ms) + 2 ms",
                    r.get("p50_ms"),
                    2 * link_rtt["S4"] + 2,
                    "ms",
                    higher=False,
                )
    return out


def fmt(v: object, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> list[str]:
    head = "| scen | peer | loop | delivered | msg/s | CPU s/1k msg | peak RSS MB | p50 ms "
    head += "| p99 ms | vs best peer | note |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        note = r.get("skipped") or r.get("error") or ""
        if r.get("capped"):
            note = f"time cap {r.get('time_cap', '')}s hit: rate over what completed"
        if r.get("errors"):
            note += f" errors: {sum(r['errors'].values())} ({next(iter(r['errors']))[:60]})"
        warmup = 1 if r.get("p50_ms") is not None else 0  # latency peers send one first
        sink = r.get("sink_delivered")
        if sink is not None and sink != (r.get("delivered") or 0) + warmup:
            note += f" sink counted {sink}"
        if r["scenario"] == "S3" and "rss_start_mb" in r:
            note += f" RSS start/peak/end {r['rss_start_mb']:.0f}/{r['peak_rss_mb']:.0f}/"
            note += f"{r['rss_end_mb']:.0f} MB"
        ratio = r.get("ratio")
        lines.append(
            f"| {r['scenario']} | {r['label']} | {r['loop']} | {fmt(r.get('delivered'), ',')} "
            f"| {fmt(r.get('msg_per_s'), ',.0f')} | {fmt(r.get('cpu_s_per_1k'), '.2f')} "
            f"| {fmt(r.get('peak_rss_mb') or None, '.0f')} | {fmt(r.get('p50_ms'), '.1f')} "
            f"| {fmt(r.get('p99_ms'), '.1f')} | {fmt(ratio, '.2f') + '×' if ratio else '–'} "
            f"| {note.strip()} |"
        )
    return lines


def chart(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(13, 13))
    for ax, sc in zip([*axes.flat[:2], *axes.flat[4:]], ("S1", "S2", "S5", "S6"), strict=True):
        mine = [r for r in rows if r["scenario"] == sc]
        ax.set_title(
            f"{sc}: {SCENARIOS[sc].title}\n"
            "(msg/s, higher is better; in brackets the client's CPU per message)",
            fontsize=9,
        )
        if not mine:
            ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
            ax.axis("off")
            continue
        names = [f"{r['label']}{' (uvloop)' if r['loop'] == 'uvloop' else ''}" for r in mine]
        colors = ["tab:green" if r["peer"] == "asyncmail" else "tab:gray" for r in mine]
        rates = [r.get("msg_per_s", 0.0) for r in mine]
        ax.barh(names, rates, color=colors)
        ax.set_xlim(0, max(rates, default=0) * 1.45 or 1)  # room for the labels
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
        for i, (rate, r) in enumerate(zip(rates, mine, strict=True)):
            text = f" {rate:,.0f}" if rate else " failed or skipped: see the table"
            if rate and r.get("cpu_s_per_1k"):  # the client's CPU (user + system) per message
                text += f"  ({r['cpu_s_per_1k'] * 1000:,.0f} µs CPU)"
            ax.text(rate, i, text, va="center", fontsize=7)
    ax = axes.flat[2]
    ax.set_title("S3: asyncmail send_many RSS over time (MB)", fontsize=9)
    s3 = [r for r in rows if r["scenario"] == "S3" and r.get("rss_samples")]
    for r in s3:
        t, m = zip(*r["rss_samples"], strict=True)
        ax.plot(t, m, label=f"{r['label']} ({r['loop']}), {r.get('delivered', 0):,} msgs")
        ax.set_ylim(0, max(160, max(m) * 1.1))
        ax.axhline(150, color="tab:red", linestyle="--", linewidth=1, label="goal 150 MB")
        ax.set_xlabel("seconds")
        ax.legend(fontsize=7)
    if not s3:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
        ax.axis("off")
    ax = axes.flat[3]
    ax.set_title("S4: one send per web request at 10 ms RTT (ms, lower is better)", fontsize=9)
    s4 = [r for r in rows if r["scenario"] == "S4"]
    if s4:
        names = [f"{r['label']}{' (uvloop)' if r['loop'] == 'uvloop' else ''}" for r in s4]
        y = range(len(s4))
        p50 = [r.get("p50_ms", 0.0) for r in s4]
        ax.barh([i - 0.2 for i in y], p50, height=0.4, label="p50")
        ax.barh([i + 0.2 for i in y], [r.get("p99_ms", 0.0) for r in s4], height=0.4, label="p99")
        for i, v in enumerate(p50):
            ax.text(v, i - 0.2, f" {v:.1f}" if v else " failed or skipped", va="center", fontsize=7)
        ax.set_yticks(list(y), names)
        ax.invert_yaxis()
        goal = 2000 * SCENARIOS["S4"].rtt + 2
        ax.axvline(goal, color="tab:red", linestyle="--", linewidth=1, label=f"goal {goal:.0f} ms")
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def chart_title(info: dict[str, str]) -> str:
    found = re.search(r"\b[0-9a-f]{7,40}\b", info["asyncmail"])
    rev = found.group(0) if found else "?"
    dirty = " + uncommitted" if "uncommitted" in info["asyncmail"] else ""
    return (
        f"asyncmail {rev}{dirty} — {info['date']}, {info['nproc']} cores ({info['cpu']}), "
        f"Python {info['python']}; grey: peers, green: asyncmail"
    )


def machine() -> dict[str, str]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(
                cmd, shell=True, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    return {
        "nproc": sh("nproc"),
        "cpu": sh("lscpu | grep 'Model name' | sed 's/.*: *//'"),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--scenarios", default="S1,S2,S3,S4,S5,S6", help="comma-separated subset of S1..S6"
    )
    p.add_argument("--quick", action="store_true", help="small counts and caps: a smoke run")
    p.add_argument("--peers", default="", help="comma-separated peer filter (default: all)")
    for key in SCENARIOS:
        p.add_argument(f"--{key.lower()}-count", type=int, help=f"messages for {key}")
        p.add_argument(f"--{key.lower()}-cap", type=float, help=f"time cap (s) per peer in {key}")
    p.add_argument("--chart", default=str(HERE / "results.png"), help="where to write the PNG")
    p.add_argument(
        "--asyncmail-rev",
        help="measure asyncmail as committed at this git revision (e.g. HEAD), not the work tree",
    )
    p.add_argument(
        "--chart-only", action="store_true", help="redraw the chart from out/results.json"
    )
    args = p.parse_args(argv)
    if args.chart_only:
        saved = json.loads((OUT / "results.json").read_text())
        chart(saved["rows"], Path(args.chart), chart_title(saved["machine"]))
        return 0

    wanted = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    if unknown := [s for s in wanted if s not in SCENARIOS]:
        p.error(f"unknown scenarios: {unknown}")
    peer_filter = {x.strip() for x in args.peers.split(",") if x.strip()}
    sink_bin = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")
    if sink_bin is None:
        p.error("smtp-sink not found: apt-get install -y postfix (see benchmarks/README.md)")
    source_bin = shutil.which("smtp-source") or shutil.which("smtp-source", path="/usr/sbin")

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    OUT.mkdir(exist_ok=True)
    info = machine()
    snapshot = None
    if args.asyncmail_rev:
        snapshot, info["asyncmail"] = snapshot_asyncmail(args.asyncmail_rev)
    else:
        info["asyncmail"] = asyncmail_version()
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    info["command"] = "python benchmarks/run.py " + " ".join(argv if argv else sys.argv[1:])
    rows: list[dict[str, Any]] = []
    link_rtt: dict[str, float] = {}  # scenario -> measured NOOP round trip through the proxy, ms
    sinks: dict[str, Sink] = {}
    try:
        for name in wanted:
            sc = SCENARIOS[name]
            if sc.sink not in sinks:
                sinks[sc.sink] = Sink(sink_bin, chunking=sc.sink == "chunking")
            sink = sinks[sc.sink]
            count, cap = QUICK[name] if args.quick else (sc.count, sc.time_cap)
            count = getattr(args, f"{name.lower()}_count") or count
            cap = getattr(args, f"{name.lower()}_cap") or cap
            sc = dataclasses.replace(sc, count=count, time_cap=cap)
            print(f"== {name}: {sc.title}: {count:,} messages, cap {cap:.0f}s per peer", flush=True)
            calibration: dict[str, float] = {}
            with maybe_proxy(sink.port, sc.rtt, calibration) as port:
                if calibration:
                    link_rtt[name] = calibration["noop_rtt_p50_ms"]
                    info[f"{name}_proxy"] = (
                        f"NOOP round trip through the proxy p50 "
                        f"{calibration['noop_rtt_p50_ms']:.2f} ms, max "
                        f"{calibration['noop_rtt_p99_ms']:.2f} ms "
                        f"(configured {sc.rtt * 1000:.0f} ms)"
                    )
                    print(f"   {info[f'{name}_proxy']}", flush=True)
                for peer, loop in PEERS_BY_SCENARIO[name]:
                    if peer_filter and peer not in peer_filter:
                        continue
                    row = run_peer(sc, peer, loop, port, sink, source_bin)
                    row |= {"count": count, "time_cap": cap, "rtt": sc.rtt}
                    rows.append(row)
                    print(
                        f"   {LABELS[peer]:32} {loop:8} "
                        + (
                            row["skipped"]
                            if "skipped" in row
                            else f"delivered {row.get('delivered', 0):>8,} "
                            f"{row.get('msg_per_s', 0):>9,.0f} msg/s"
                            + (f"  p50 {row['p50_ms']:.1f} ms" if "p50_ms" in row else "")
                        ),
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("interrupted: stopping peers, proxy and sink", file=sys.stderr)
        return 130
    finally:
        _kill_children()
        for sink in sinks.values():
            sink.close()
        if snapshot:
            shutil.rmtree(snapshot, ignore_errors=True)

    add_ratios(rows)
    lines = table(rows)
    verdicts = goals(rows, link_rtt)
    print()
    print("\n".join(lines))
    print()
    print("\n".join(verdicts))
    (OUT / "results.json").write_text(
        json.dumps({"machine": info, "rows": rows, "goals": verdicts}, indent=1)
    )
    md = [f"- `{k}`: {v}" for k, v in info.items()] + [
        "",
        *lines,
        "",
        *[f"- {v}" for v in verdicts],
    ]
    (OUT / "results.md").write_text("\n".join(md) + "\n")
    chart(rows, Path(args.chart), chart_title(info))
    print(f"\nwrote {OUT / 'results.json'}, {OUT / 'results.md'}, {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

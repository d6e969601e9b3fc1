"""Where the outbox's time goes: cProfile of ``enqueue`` and of one worker process.

    python benchmarks/profile_outbox.py [N] [--others K]

1. Enqueues N messages (those of benchmarks/outbox.py) one after the other into a fresh
   SQLite outbox in /tmp, profiled in this process: the event loop's thread and the store's.
2. Starts one worker process (``_outbox_worker.py worker --exit-after N --profile ...``) that
   delivers them to ``smtp-sink``, profiled the same way from "go" until N are settled.
   With ``--others K``, K unprofiled workers deliver from the same outbox at the same time
   (the profiled one stops once it has settled nothing for 1 s): what do they contend for?

Prints, per message, the cost of the outbox's own steps (lease, mark_sending, finish,
decode, Job.of, encode, the commits) and the top functions of ``asyncmail/outbox/``; writes
the raw stats to ``benchmarks/out/outbox-enqueue.prof`` and ``outbox-worker.prof`` (open them
with ``python -m pstats`` or snakeviz).

``--timer wall`` (the default) times with the wall clock, per thread: in the store's thread a
statement's time includes waiting for the disk (fsync at COMMIT), for another process's
write lock (BEGIN IMMEDIATE) and for the GIL, which the event loop's thread holds while it
runs Python (up to the 5 ms switch interval). ``--timer cpu`` uses each thread's CPU time,
without those waits; the difference between the two runs is the waiting. In the event loop's
thread a coroutine's time counts only while it runs, and each resumption counts as a call.
Profiling slows Python code about 2x; compare shares, not absolute rates. Run by hand.
"""

from __future__ import annotations

import argparse
import json
import marshal
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
from _outbox_worker import ThreadProfiles, message  # noqa: E402
from outbox import WORKER_PY, go, read_lines, spawn, stop  # noqa: E402
from run import Sink  # noqa: E402

from asyncmail import Outbox  # noqa: E402

Key = tuple[str, int, str]
Row = tuple[int, int, float, float, dict[Key, Any]]  # cc, nc, tottime, cumtime, callers


async def enqueue_sequentially(url: str, count: int, path: Path, timer: str) -> float:
    profiles = ThreadProfiles(timer)
    profiles.start()  # the store's thread starts when the outbox opens
    async with Outbox(url) as outbox:
        profiles.enable_main()
        started = time.perf_counter()
        for i in range(count):
            await outbox.enqueue(message(i))
        wall = time.perf_counter() - started
        profiles.dump(str(path))
    return wall


def load(path: Path) -> dict[Key, Row]:
    with open(path, "rb") as f:
        stats: dict[Key, Row] = marshal.load(f)
    return stats


def where(key: Key) -> str:
    file, line, name = key
    if file == "~":
        return name  # a builtin, such as {method 'execute' of 'sqlite3.Connection' objects}
    short = file.split("/asyncmail/", 1)[-1] if "/asyncmail/" in file else Path(file).name
    return f"{short}:{line} {name}"


def find(stats: dict[Key, Row], file_end: str, name: str) -> list[Key]:
    """The functions called ``name`` in a file ending with ``file_end``, by line number."""
    return sorted(k for k in stats if k[0].endswith(file_end) and k[2] == name)


def inner(stats: dict[Key, Row], file_end: str, name: str) -> Key | None:
    """The nested function a store method runs on the store's thread (defined after it)."""
    found = find(stats, file_end, name)
    return found[-1] if len(found) > 1 else None


def from_caller(stats: dict[Key, Row], callee_name: str, caller: Key | None) -> Row | None:
    """``callee`` (a builtin, by name) as called from ``caller`` only."""
    if caller is None:
        return None
    for key, row in stats.items():
        if key[0] == "~" and key[2] == callee_name and caller in row[4]:
            cc, nc, tt, ct = row[4][caller]
            return (cc, nc, tt, ct, {})
    return None


def line(label: str, row: Row | None, n: int) -> str:
    if row is None:
        return f"| {label} | – | – | – |"
    _cc, nc, tt, ct, _ = row
    return f"| {label} | {nc / n:.2f} | {1e6 * tt / n:,.1f} | {1e6 * ct / n:,.1f} |"


HEAD = ["| step | calls/msg | own µs/msg | incl. µs/msg |", "|---|---|---|---|"]
EXECUTE = "<method 'execute' of 'sqlite3.Connection' objects>"


def first(stats: dict[Key, Row], file_end: str, name: str) -> Row | None:
    found = find(stats, file_end, name)
    return stats[found[0]] if found else None


def store_op(stats: dict[Key, Row], name: str) -> Row | None:
    """The nested function a SQLite store method runs on the store's thread."""
    key = inner(stats, "outbox/_sqlite.py", name)
    return None if key is None else stats[key]


def transactions(stats: dict[Key, Row]) -> tuple[Row | None, Row | None, Row | None]:
    """``Connection._run``, and the statements it and ``_one`` execute themselves."""
    run = next(iter(find(stats, "outbox/_sqlite_io.py", "_run")), None)
    one = next(iter(find(stats, "outbox/_sqlite_io.py", "_one")), None)
    return (
        None if run is None else stats[run],
        from_caller(stats, EXECUTE, run),
        from_caller(stats, EXECUTE, one),
    )


def table(chosen: list[tuple[str, Row | None]], n: int) -> list[str]:
    return [*HEAD, *(line(label, row, n) for label, row in chosen)]


def enqueue_steps(stats: dict[Key, Row], n: int) -> list[str]:
    run, begin_commit, savepoints = transactions(stats)
    return table(
        [
            ("Outbox.enqueue (event loop, while it runs)", first(stats, "_outbox.py", "enqueue")),
            (
                "  Job.of: validate and render (the bytes are dropped)",
                first(stats, "_job.py", "of"),
            ),
            ("  _codec.encode: the payload's JSON", first(stats, "_codec.py", "encode")),
            ("  uuid4 (the default key)", first(stats, "uuid.py", "uuid4")),
            (
                "store thread: enqueue op (INSERT, then read the status back)",
                store_op(stats, "enqueue"),
            ),
            ("  _get_status (the read-back)", first(stats, "_sqlite.py", "_get_status")),
            ("store thread: BEGIN IMMEDIATE + COMMIT (lock wait, fsync)", begin_commit),
            ("store thread: SAVEPOINT + RELEASE around each op", savepoints),
            ("store thread: Connection._run (the whole transaction)", run),
        ],
        n,
    )


def worker_steps(stats: dict[Key, Row], n: int) -> list[str]:
    run, begin_commit, savepoints = transactions(stats)
    return table(
        [
            ("Delivery._hold: decode + Job.of", first(stats, "_deliver.py", "_hold")),
            ("  _codec.decode", first(stats, "_codec.py", "decode")),
            ("  Job.of: validate and render", first(stats, "_job.py", "of")),
            ("Delivery.emit: plan, then finish (event loop)", first(stats, "_deliver.py", "emit")),
            ("  _plan.plan", first(stats, "_plan.py", "plan")),
            ("the gate: mark_sending (event loop)", first(stats, "_deliver.py", "gate")),
            ("store thread: _has_work", first(stats, "_sqlite.py", "_has_work")),
            (
                "store thread: _lease (take-over, SELECT, UPDATE per row)",
                first(stats, "_sqlite.py", "_lease"),
            ),
            ("  _take_over", first(stats, "_sqlite.py", "_take_over")),
            ("store thread: mark_sending op", store_op(stats, "mark_sending")),
            ("store thread: finish op", store_op(stats, "finish")),
            ("store thread: renew op", store_op(stats, "renew")),
            ("store thread: BEGIN IMMEDIATE + COMMIT (lock wait, fsync)", begin_commit),
            ("store thread: SAVEPOINT + RELEASE around each op", savepoints),
            ("store thread: Connection._run (all transactions)", run),
            ("event loop: Connection.call (hand-off)", first(stats, "_sqlite_io.py", "call")),
        ],
        n,
    )


def top(stats: dict[Key, Row], n: int, keep: Callable[[Key], bool], count: int = 20) -> list[str]:
    rows = sorted(((k, r) for k, r in stats.items() if keep(k)), key=lambda kr: -kr[1][2])
    out = ["| function | calls/msg | own µs/msg | incl. µs/msg |", "|---|---|---|---|"]
    for key, row in rows[:count]:
        out.append(line(where(key), row, n))
    return out


def in_outbox(key: Key) -> bool:
    return "/asyncmail/outbox/" in key[0] and key[2] not in ("_serve",)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("count", nargs="?", type=int, default=3000)
    p.add_argument("--others", type=int, default=0, help="unprofiled workers beside it")
    p.add_argument("--timer", choices=("wall", "cpu"), default="wall", help="see above")
    args = p.parse_args(argv)
    n = args.count
    sink_bin = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")
    if sink_bin is None:
        raise SystemExit("smtp-sink not found: apt-get install -y postfix (benchmarks/README.md)")
    OUT.mkdir(exist_ok=True)
    enqueue_prof, worker_prof = OUT / "outbox-enqueue.prof", OUT / "outbox-worker.prof"
    tmp = tempfile.mkdtemp(prefix="asyncmail-profile-outbox-", dir="/tmp")
    url = f"sqlite:///{tmp}/outbox.db"
    sink = Sink(sink_bin)
    smtp = f"smtp://127.0.0.1:{sink.port}?tls=none"
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    try:
        wall = anyio.run(enqueue_sequentially, url, n, enqueue_prof, args.timer)
        print(f"enqueued {n:,} one after the other in {wall:.2f} s (profiled)", flush=True)
        cmd = [sys.executable, str(WORKER_PY), "worker", "--outbox", url, "--smtp", smtp]
        logs = [tempfile.TemporaryFile() for _ in range(1 + args.others)]  # noqa: SIM115
        profiled = [*cmd, "--exit-after", str(n), "--idle-exit", "1", "--profile", str(worker_prof)]
        procs = [spawn([*profiled, "--profile-timer", args.timer], logs[0])]
        procs += [spawn(cmd, log) for log in logs[1:]]
        try:
            read_lines(procs, 60, "ready line")
            go(procs)
            result = json.loads(read_lines(procs[:1], 600, "result line")[0])
        finally:
            stop(procs)
            for log in logs:
                log.close()
    finally:
        sink.close()
        shutil.rmtree(tmp, ignore_errors=True)
    settled = result["settled"]
    print(
        f"the profiled worker settled {settled:,} ({result['delivered']:,} delivered) in "
        f"{result['wall_s']:.2f} s"
        + (f", {args.others} other worker(s) beside it" if args.others else "")
        + f"; per message: {1e6 * result['cpu_s'] / settled:,.0f} µs CPU (event loop thread "
        f"{1e6 * result['main_thread_cpu_s'] / settled:,.0f}, other threads "
        f"{1e6 * result['other_threads_cpu_s'] / settled:,.0f}), "
        f"{result['write_bytes'] / settled / 1024:,.1f} KiB written to disk (profiled)",
        flush=True,
    )
    enq, wrk = load(enqueue_prof), load(worker_prof)
    print(f"\n## enqueue, per message ({n:,} sequential calls)\n")
    print("\n".join(enqueue_steps(enq, n)))
    print(f"\n## worker, per message ({settled:,} settled)\n")
    print("\n".join(worker_steps(wrk, settled)))
    print("\n## worker: top functions of asyncmail/outbox/ by own time\n")
    print("\n".join(top(wrk, settled, in_outbox)))
    print("\n## worker: top functions anywhere by own time\n")
    print("\n".join(top(wrk, settled, lambda k: k[2] not in ("_serve", "get"), 25)))
    print(f"\nwrote {enqueue_prof} and {worker_prof}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The report of benchmarks/outbox.py: its tables, goal verdicts, what limits each run, the chart.

Every function here reads the ``result`` dict that ``outbox.py`` builds (and writes to
``benchmarks/out/outbox.json``): ``rows`` of delivery runs (``kind`` "outbox" or "send_many")
and ``enqueue`` measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Worker processes per delivery run, and processes of the send_many baselines.
WORKER_COUNTS = (1, 2, 4)
BASELINE_PROCESSES = (1, 2, 4)
GOAL_ENQUEUE_P50_MS = 1.0
GOAL_RATIO = 0.5


def baselines(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Mean msg/s of send_many per process count, over the runs before and after."""
    out: dict[int, float] = {}
    for n in BASELINE_PROCESSES:
        rates = [r["msg_per_s"] for r in rows if r["kind"] == "send_many" and r["processes"] == n]
        rates = [x for x in rates if x]
        if rates:
            out[n] = sum(rates) / len(rates)
    return out


def fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "–" if v is None else format(v, spec) + suffix


def delivery_table(rows: list[dict[str, Any]], base: dict[int, float]) -> list[str]:
    lines = [
        "| store | workers | delivered | s | msg/s | vs send_many 1 proc | vs send_many same procs "
        "| CPU µs/msg | cores each | sink cores | redis cores | note |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        if r["kind"] == "send_many":
            name, procs = f"send_many ({r['phase']})", r["processes"]
        else:
            name, procs = r["store"], r["workers"]
        rate = r.get("msg_per_s")
        one = rate / base[1] if rate and 1 in base else None
        same = rate / base[procs] if rate and procs in base else None
        cpu = r.get("cpu") or {}
        wall = r.get("wall_s")
        each = cpu["workers_s"] / (wall * procs) if cpu and wall else None
        per_msg = 1e6 * cpu["workers_s"] / r["delivered"] if cpu and r.get("delivered") else None
        sink = cpu["sink_s"] / wall if cpu and wall else None
        redis = cpu["redis_s"] / wall if cpu and wall and "redis_s" in cpu else None
        note = r.get("error", "") or r.get("note", "")
        if "sink_delivered" in r and r["sink_delivered"] != r.get("delivered"):
            note += f" sink counted {r['sink_delivered']:,}"
        if change := r.get("redis_persistence"):
            a, b = change["before"]["aof_rewrites"], change["after"]["aof_rewrites"]
            note += f" an AOF rewrite ran during it (aof_rewrites {a} -> {b})"
        lines.append(
            f"| {name} | {procs} | {fmt(r.get('delivered'), ',')} | {fmt(wall, '.2f')} "
            f"| {fmt(rate, ',.0f')} | {fmt(one, '.2f', '×')} | {fmt(same, '.2f', '×')} "
            f"| {fmt(per_msg, ',.0f')} | {fmt(each, '.2f')} | {fmt(sink, '.2f')} "
            f"| {fmt(redis, '.2f')} | {note.strip()} |"
        )
    return lines


def enqueue_table(enqueue: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| store | calls | p50 ms | p90 ms | p99 ms | max ms | mean ms | msg/s, 50 enqueuers |",
        "|" + "---|" * 8,
    ]
    for e in enqueue:
        lines.append(
            f"| {e['store']} | {e['calls']:,} | {e['p50_ms']:.2f} | {e['p90_ms']:.2f} "
            f"| {e['p99_ms']:.2f} | {e['max_ms']:.2f} | {e['mean_ms']:.2f} "
            f"| {e['throughput_msg_per_s']:,.0f} ({e['throughput_count']:,} msgs) |"
        )
    return lines


def goals(result: dict[str, Any], base: dict[int, float]) -> list[str]:
    out = []
    sqlite = next((e for e in result["enqueue"] if e["store"] == "sqlite"), None)
    if sqlite is None:
        out.append("SQLite enqueue p50 <= 1 ms (durable commit): not measured")
    else:
        verdict = "PASS" if sqlite["p50_ms"] <= GOAL_ENQUEUE_P50_MS else "FAIL"
        out.append(
            f"SQLite enqueue p50 <= {GOAL_ENQUEUE_P50_MS:.0f} ms (WAL + synchronous=FULL): "
            f"{sqlite['p50_ms']:.2f} ms -> {verdict}"
        )
    for store in ("sqlite", "redis"):
        label = {"sqlite": "SQLite", "redis": "Redis"}[store]
        if store in result["skipped"]:
            out.append(f"{label} outbox >= {GOAL_RATIO}x send_many: not measured (skipped)")
            continue
        rows = [r for r in result["rows"] if r.get("store") == store]
        parts, ok = [], bool(rows)
        for r in rows:
            n = r["workers"]
            if not r.get("msg_per_s") or n not in base:
                parts.append(f"{n} worker(s): not measured")
                ok = False
                continue
            ratio = r["msg_per_s"] / base[n]
            ok &= ratio >= GOAL_RATIO
            parts.append(
                f"{n} worker(s) {ratio:.2f}x send_many in {n} process(es) "
                f"({r['msg_per_s']:,.0f} vs {base[n]:,.0f} msg/s)"
            )
        verdict = "PASS" if ok else "FAIL"
        out.append(
            f"{label} outbox >= {GOAL_RATIO}x send_many, as many processes each, every count: "
            f"{'; '.join(parts)} -> {verdict}"
        )
        out += _one_process_goals(label, rows, base)
    return out


def _one_process_goals(label: str, rows: list[dict[str, Any]], base: dict[int, float]) -> list[str]:
    """The goal read as the issue words it: the outbox path against send_many() directly."""
    one = base.get(1)
    measured = [r for r in rows if r.get("msg_per_s")]
    if not one or not measured:
        return []
    single = next((r for r in measured if r["workers"] == 1), None)
    best = max(measured, key=lambda r: r["msg_per_s"])
    out = []
    if single is not None:
        ratio = single["msg_per_s"] / one
        verdict = "PASS" if ratio >= GOAL_RATIO else "FAIL"
        out.append(
            f"{label} outbox >= {GOAL_RATIO}x send_many, one process each: {ratio:.2f}x "
            f"({single['msg_per_s']:,.0f} vs {one:,.0f} msg/s) -> {verdict}"
        )
    ratio = best["msg_per_s"] / one
    verdict = "PASS" if ratio >= GOAL_RATIO else "FAIL"
    out.append(
        f"{label} outbox >= {GOAL_RATIO}x send_many, its best worker count against one "
        f"send_many process: {ratio:.2f}x ({best['workers']} workers, "
        f"{best['msg_per_s']:,.0f} vs {one:,.0f} msg/s) -> {verdict}"
    )
    return out


def limits(rows: list[dict[str, Any]], ncpu: int) -> list[str]:
    """What each outbox run was limited by, read from the CPU it and the machine used."""
    out = []
    for r in rows:
        if r["kind"] != "outbox" or not r.get("cpu") or not r.get("wall_s"):
            continue
        cpu, wall, n = r["cpu"], r["wall_s"], r["workers"]
        each = cpu["workers_s"] / (wall * n)
        loop = cpu["workers_main_thread_s"] / (wall * n)
        other = cpu["workers_other_threads_s"] / (wall * n)
        sink = cpu["sink_s"] / wall
        store = cpu.get("redis_s", 0.0) / wall
        parent = cpu["parent_s"] / wall
        kernel = cpu["kernel_threads_s"] / wall
        others = cpu["other_processes_s"] / wall
        busy = cpu.get("machine_busy_frac", 0.0)
        per_msg = 1e6 * cpu["workers_s"] / max(1, r["delivered"])
        written = cpu["workers_write_bytes"] / max(1, r["delivered"]) / 1024
        where = (
            f"workers: {per_msg:,.0f} µs CPU and {written:,.1f} KiB written to disk per message; "
            f"cores used: workers {each:.2f} each (event loop {loop:.2f}, store and other "
            f"threads {other:.2f}), smtp-sink {sink:.2f}, redis-server {store:.2f}, this "
            f"script's polling {parent:.2f}, kernel threads {kernel:.2f}, other jobs "
            f"{others:.2f}; machine {busy:.0%} busy, iowait "
            f"{cpu.get('machine_iowait_frac', 0.0):.0%}, steal "
            f"{cpu.get('machine_steal_frac', 0.0):.0%}"
        )
        if busy >= 0.9:
            why = f"the machine's CPU ({ncpu} cores {busy:.0%} busy)"
            if others >= 0.3:
                why += f", {others:.2f} core of it other jobs': a noisy result"
        elif other > max(0.3, loop):
            why = (
                f"the store side of the workers: each one's store thread (plus anyio's) uses "
                f"{other:.2f} core, more than its event loop ({loop:.2f}), and one thread "
                "does all of a worker's store work"
            )
        elif each >= 0.75:
            why = "the worker processes' CPU (each near a core of its own)"
        elif sink >= 0.75:
            why = "smtp-sink's CPU"
        elif store >= 0.75:
            why = "redis-server's CPU"
        else:
            why = (
                "not CPU: the workers wait (for the store's commits and round trips; SQLite "
                "lets one process write at a time)"
            )
        if r.get("polls"):
            where += (
                f"; statistics() cost this script {1000 * cpu['parent_s'] / r['polls']:.1f} ms "
                f"CPU per poll ({r['polls']} polls)"
            )
        busiest = ", ".join(r.get("busiest_other_processes") or []) or "none"
        out.append(f"{r['store']}, {n} worker(s): {why}. {where} (busiest other: {busiest})")
    return out


def drift(rows: list[dict[str, Any]]) -> list[str]:
    """The send_many baselines before and after the outbox runs: how far the machine moved."""
    out = []
    for n in BASELINE_PROCESSES:
        rates = {
            r["phase"]: r.get("msg_per_s")
            for r in rows
            if r["kind"] == "send_many" and r["processes"] == n
        }
        a, b = rates.get("before"), rates.get("after")
        if a and b:
            out.append(
                f"send_many, {n} process(es): {a:,.0f} msg/s before the outbox runs, {b:,.0f} "
                f"after ({abs(a - b) / max(a, b):.0%} apart); the ratios use the mean"
            )
    return out


def chart(result: dict[str, Any], base: dict[int, float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    stores = ["sqlite", "redis"]
    width = 0.38
    for i, n in enumerate(WORKER_COUNTS):
        for j, store in enumerate(stores):
            x = i + (j - 0.5) * width
            row = next(
                (r for r in result["rows"] if r.get("store") == store and r["workers"] == n), None
            )
            rate = (row or {}).get("msg_per_s", 0.0)
            color = ("tab:blue", "tab:red")[j]
            ax.bar(x, rate, width, color=color, label=store if i == 0 else None)
            text = f"{rate:,.0f}" if rate else ("skipped" if store in result["skipped"] else "–")
            ax.text(x, rate, text, ha="center", va="bottom", fontsize=8)
        if n in base:
            ax.hlines(base[n], i - 0.45, i + 0.45, colors="black", linewidth=2)
            ax.hlines(GOAL_RATIO * base[n], i - 0.45, i + 0.45, colors="gray", linestyles=":")
    if 1 in base:
        ax.axhline(base[1], color="tab:green", linestyle="--", linewidth=1)
    ax.plot([], [], color="tab:green", linestyle="--", label="send_many, 1 process")
    ax.plot([], [], color="black", linewidth=2, label="send_many, same number of processes")
    ax.plot([], [], color="gray", linestyle=":", label=f"goal: {GOAL_RATIO}x that")
    ax.set_xticks(range(len(WORKER_COUNTS)), [f"{n} worker process(es)" for n in WORKER_COUNTS])
    ax.set_ylabel("messages per second (higher is better)")
    top = max([*base.values(), *(r.get("msg_per_s", 0.0) for r in result["rows"])], default=1)
    ax.set_ylim(0, 1.3 * top)  # room for the legend above the bars and lines
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

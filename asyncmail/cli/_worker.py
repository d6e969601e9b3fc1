"""``asyncmail worker``: deliver an outbox's messages until a signal says stop.

The first SIGTERM or SIGINT stops it gracefully: no new leases, the messages leased but not
started go back to the outbox at once, and the sends in progress get ``--grace`` seconds to
finish (exit 0). A second one cuts them off at once (exit 130, whichever the signal): the
clean-up of ``Delivery.run`` still hands back every message not started and ends UNKNOWN
those whose final dot may be out, so nothing stays leased.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio

from .._config import Server
from .._exceptions import ConfigError, OutboxError
from ..dkim._signer import DKIM
from ..engine._mailer import Mailer
from ..engine._ratelimit import RateLimit
from ..outbox._deliver import Delivery
from ..outbox._outbox import Outbox
from ..outbox._telemetry import PrometheusTelemetry

__all__ = ["EXIT_CUT_OFF", "WorkerOptions", "run_worker"]

logger = logging.getLogger("asyncmail")

#: The exit code after a second signal cut the sends in progress off (whichever signal).
EXIT_CUT_OFF = 130
EXIT_OK = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """What ``asyncmail worker`` was asked to do."""

    outbox: str
    url: str | None
    concurrency: int = 10
    rate: str | None = None
    grace: float = 30.0
    lease_seconds: float = 30.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_interval: float = 5.0
    suppress: bool = False
    dkim: tuple[DKIM, ...] = ()


class _Signals:
    """Turns SIGTERM and SIGINT into a graceful stop, then a cut-off."""

    def __init__(self, delivery: Delivery, echo: Callable[[str], None]) -> None:
        self.delivery = delivery
        self.echo = echo
        self.stopping = anyio.Event()
        self.cut_off = False

    async def watch(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not self.stopping.is_set():
                self.echo(
                    f"{name}: stopping; no new messages, the sends in progress may finish "
                    f"(send it again to stop at once)"
                )
                self.stopping.set()
            else:
                self.echo(f"{name} again: stopping at once")
                self.cut_off = True
                self.delivery.stop(now=True)
                return


async def _refresh(outbox: Outbox, metrics: PrometheusTelemetry, interval: float) -> None:
    """Keep the gauges that come from the outbox's statistics current."""
    while True:
        try:
            metrics.observe(await outbox.statistics())
        except OutboxError as exc:
            logger.warning("reading the statistics of %s failed: %s", outbox.store.url, exc)
        await anyio.sleep(interval)


def _serve_metrics(metrics: PrometheusTelemetry, host: str, port: int) -> int:
    try:
        return metrics.serve(port, host)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None


def _start_line(
    delivery: Delivery, server: Server, options: WorkerOptions, port: int | None
) -> str:
    rate = f", rate {options.rate}" if options.rate else ""
    metrics = f", metrics on http://{options.metrics_host}:{port}/metrics" if port else ""
    return (
        f"worker {delivery.worker}: delivering {delivery.store.url} through {server.display} "
        f"(concurrency {options.concurrency}{rate}{metrics})"
    )


def _summary(delivery: Delivery, cut_off: bool) -> str:
    how = "cut off" if cut_off else "stopped"
    return (
        f"worker {how}: {delivery.delivered} delivered, {delivery.failed} failed, "
        f"{delivery.unknown} unknown, {delivery.retried} retried"
    )


async def run_worker(options: WorkerOptions, echo: Callable[[str], None]) -> int:
    """Deliver until signalled; returns the exit code (0, or ``EXIT_CUT_OFF``).

    Raises:
        ConfigError: A bad URL or rate, or the metrics extra is missing.
        OutboxError: The outbox cannot be opened.
        OSError: The metrics port cannot be listened on.
    """
    server = Server.from_url(options.url) if options.url else Server.from_env()
    if options.rate is not None:
        RateLimit.parse(options.rate)
    metrics = PrometheusTelemetry() if options.metrics_port is not None else None
    outbox = Outbox(
        options.outbox, lease_seconds=options.lease_seconds, suppression=options.suppress or None
    )
    mailer = Mailer(server, max_connections=options.concurrency, dkim=options.dkim or None)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with mailer, outbox:
            delivering = outbox.deliver(
                mailer,
                concurrency=options.concurrency,
                rate=options.rate,
                grace=options.grace,
                telemetry=metrics,
            )
            delivery = delivering.delivery
            port = None
            if metrics is not None and options.metrics_port is not None:
                port = _serve_metrics(metrics, options.metrics_host, options.metrics_port)
            watcher = _Signals(delivery, echo)
            try:
                echo(_start_line(delivery, server, options, port))
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watcher.watch, signals)
                    if metrics is not None:
                        tg.start_soon(_refresh, outbox, metrics, options.metrics_interval)
                    async with delivering:
                        await watcher.stopping.wait()
                    tg.cancel_scope.cancel()
            finally:
                if metrics is not None:
                    metrics.close()
    echo(_summary(delivery, watcher.cut_off))
    return EXIT_CUT_OFF if watcher.cut_off else EXIT_OK

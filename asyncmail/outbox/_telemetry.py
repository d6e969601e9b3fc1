"""An outbox's metrics (Prometheus) and traces (OpenTelemetry), through the ``Telemetry`` hooks.

Both libraries are optional. With ``opentelemetry-api`` installed (``asyncmail[otel]``),
every Outbox traces by default: ``enqueue``, ``lease`` and ``send`` spans from the tracer
``"asyncmail"``, which cost next to nothing until the application installs an SDK. Without
it the hooks are not called at all. Prometheus metrics are asked for explicitly::

    metrics = PrometheusTelemetry()          # pip install 'asyncmail[metrics]'
    async with outbox.deliver(mailer, telemetry=metrics):
        ...

A span carries the message's key and what happened, never an address, a message's
content, or the server's words (which often quote an address): a key that holds an ``@``
is given as a digest of itself (``sha256:…``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

from .._exceptions import ConfigError
from ._deliver import Telemetry
from ._model import FINAL_STATES, OutboxStatistics, Outcome, State

if TYPE_CHECKING:
    import threading
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.trace import Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue
    from prometheus_client import CollectorRegistry

__all__ = [
    "METRICS_HINT",
    "OUTCOMES",
    "Fanout",
    "PrometheusTelemetry",
    "Tracing",
    "combine",
    "default_telemetry",
    "outcome_name",
    "span_key",
]

METRICS_HINT = "pip install 'asyncmail[metrics]'"
OTEL_HINT = "pip install 'asyncmail[otel]'"
TRACER_NAME = "asyncmail"
#: The ``outcome`` label values: a final state, or ``retried`` (queued for another attempt).
OUTCOMES = ("delivered", "failed", "unknown", "retried")
#: Buckets of ``asyncmail_outbox_send_seconds``: a send takes milliseconds to a minute.
SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def outcome_name(outcome: Outcome) -> str:
    """``delivered``, ``failed``, ``unknown``, or ``retried`` for a message queued again."""
    return outcome.state.value if outcome.state in FINAL_STATES else "retried"


def span_key(key: str) -> str:
    """A key as a span may carry it: one holding an ``@`` (an address) as its digest."""
    if "@" not in key:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@cache
def _has_otel() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ImportError:  # (no opentelemetry package at all)
        return False


def default_telemetry() -> Telemetry | None:
    """Tracing when ``opentelemetry-api`` is installed, else nothing."""
    return Tracing() if _has_otel() else None


def combine(*telemetries: Telemetry | None) -> Telemetry | None:
    """One Telemetry reporting to each of ``telemetries`` (None ones left out)."""
    chosen = [t for t in telemetries if t is not None]
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else Fanout(*chosen)


class Fanout:
    """Reports to several telemetries, in order."""

    def __init__(self, *telemetries: Telemetry) -> None:
        self.telemetries = telemetries

    def enqueued(self, key: str, created: bool, seconds: float) -> None:
        for telemetry in self.telemetries:
            telemetry.enqueued(key, created, seconds)

    def leased(self, keys: Sequence[str], seconds: float) -> None:
        for telemetry in self.telemetries:
            telemetry.leased(keys, seconds)

    def finished(self, key: str, outcome: Outcome, seconds: float) -> None:
        for telemetry in self.telemetries:
            telemetry.finished(key, outcome, seconds)


class Tracing:
    """OpenTelemetry spans ``enqueue``, ``lease`` and ``send`` (tracer ``"asyncmail"``).

    Each span is recorded when its step is over, with the step's start and end times.

    Args:
        tracer_provider: Where the spans go; the global provider by default.

    Raises:
        ConfigError: ``opentelemetry-api`` is not installed.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        if not _has_otel():
            raise ConfigError(f"tracing needs opentelemetry-api: {OTEL_HINT}")
        self.tracer_provider = tracer_provider
        self._tracer: Tracer | None = None  # (imported at the first span: it takes a while)

    def _span(
        self, name: str, seconds: float, attributes: dict[str, AttributeValue], error: bool
    ) -> None:
        from opentelemetry import trace

        if self._tracer is None:
            self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=self.tracer_provider)
        end = time.time_ns()
        span = self._tracer.start_span(
            name, start_time=end - int(seconds * 1e9), attributes=attributes
        )
        if error:
            span.set_status(trace.StatusCode.ERROR)
        span.end(end_time=end)

    def enqueued(self, key: str, created: bool, seconds: float) -> None:
        attributes: dict[str, AttributeValue] = {
            "asyncmail.outbox.key": span_key(key),
            "asyncmail.outbox.outcome": "created" if created else "exists",
        }
        self._span("enqueue", seconds, attributes, error=False)

    def leased(self, keys: Sequence[str], seconds: float) -> None:
        attributes: dict[str, AttributeValue] = {
            "asyncmail.outbox.keys": [span_key(key) for key in keys],
            "asyncmail.outbox.count": len(keys),
        }
        self._span("lease", seconds, attributes, error=False)

    def finished(self, key: str, outcome: Outcome, seconds: float) -> None:
        attributes: dict[str, AttributeValue] = {
            "asyncmail.outbox.key": span_key(key),
            "asyncmail.outbox.outcome": outcome_name(outcome),
            "asyncmail.outbox.attempts": outcome.attempts,
            "asyncmail.outbox.accepted": len(outcome.accepted),
            "asyncmail.outbox.refused": len(outcome.refused),
        }
        error = outcome.state in (State.FAILED, State.UNKNOWN)
        self._span("send", seconds, attributes, error=error)


class PrometheusTelemetry:
    """Prometheus metrics of one worker, in a registry of its own.

    - ``asyncmail_outbox_messages_total{outcome}``: attempts by outcome (``OUTCOMES``).
    - ``asyncmail_outbox_retries_total``: recipients queued for another attempt.
    - ``asyncmail_outbox_send_seconds``: from a send's start to its outcome stored.
    - ``asyncmail_outbox_queue_depth``, ``asyncmail_outbox_rate``: the outbox's queued
      messages and messages finished per second (every worker), as of the last ``observe``.

    Args:
        registry: Where the metrics live; a new ``CollectorRegistry`` by default.

    Raises:
        ConfigError: ``prometheus-client`` is not installed.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigError(f"metrics need prometheus-client: {METRICS_HINT}") from None
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self.messages = prom.Counter(
            "asyncmail_outbox_messages",
            "Outbox messages by the outcome of an attempt",
            ["outcome"],
            registry=self.registry,
        )
        for name in OUTCOMES:
            self.messages.labels(outcome=name)
        self.retries = prom.Counter(
            "asyncmail_outbox_retries",
            "Recipients queued for another attempt after a temporary failure",
            registry=self.registry,
        )
        self.send_seconds = prom.Histogram(
            "asyncmail_outbox_send_seconds",
            "Seconds from a send's start to its outcome stored",
            buckets=SEND_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = prom.Gauge(
            "asyncmail_outbox_queue_depth", "Messages queued in the outbox", registry=self.registry
        )
        self.rate = prom.Gauge(
            "asyncmail_outbox_rate",
            "Messages finished per second over the last minute, by every worker",
            registry=self.registry,
        )
        self._server: tuple[WSGIServer, threading.Thread] | None = None

    def enqueued(self, key: str, created: bool, seconds: float) -> None:
        pass

    def leased(self, keys: Sequence[str], seconds: float) -> None:
        pass

    def finished(self, key: str, outcome: Outcome, seconds: float) -> None:
        self.messages.labels(outcome=outcome_name(outcome)).inc()
        if outcome.state is State.QUEUED:
            self.retries.inc(len(outcome.pending))
        if seconds > 0:
            self.send_seconds.observe(seconds)

    def observe(self, statistics: OutboxStatistics) -> None:
        """Set the gauges from ``Outbox.statistics()``."""
        self.queue_depth.set(statistics.queued)
        self.rate.set(statistics.rate)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` over HTTP on a thread, until ``close()``; returns the port.

        Raises:
            OSError: The address cannot be listened on.
        """
        from prometheus_client import start_http_server

        self._server = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server[0].server_port)

    def close(self) -> None:
        """Stop serving ``/metrics``."""
        server, self._server = self._server, None
        if server is not None:
            server[0].shutdown()
            server[0].server_close()
            server[1].join()

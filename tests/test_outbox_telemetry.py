"""An outbox's traces and metrics, in process: OpenTelemetry spans and Prometheus counters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from asyncmail import Outbox, OutboxState, RetryPolicy
from asyncmail.outbox._telemetry import PrometheusTelemetry, Tracing, span_key
from asyncmail.testing import CaptureServer, Fault

from ._support import mailer_for, message

PASSWORD = "s3cret-Pa55"
#: A retry that waits long enough not to happen during a test.
LATER = RetryPolicy(attempts=3, max_time=3600.0, base_delay=600.0, max_delay=600.0, jitter=False)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[Tracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider)
    provider.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def wait_until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll the store: what changes it runs in other tasks, with no event to wait for."""
    while not await condition():  # noqa: ASYNC110
        await anyio.sleep(0.02)


def settled(outbox: Outbox, count: int) -> Callable[[], Awaitable[bool]]:
    """True once ``count`` messages left the queue for good or for a later retry."""

    async def condition() -> bool:
        stats = await outbox.statistics()
        busy = stats.counts[OutboxState.LEASED] + stats.counts[OutboxState.SENDING]
        done = sum(stats.counts[s] for s in (OutboxState.DELIVERED, OutboxState.FAILED))
        return not busy and done + stats.queued >= count and stats.oldest_queued_age is None

    return condition


async def test_enqueue_lease_and_send_are_spans_with_key_and_outcome_and_no_address(
    tmp_path: Path, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    faults = [Fault.reply("rcpt", 550, "5.1.1 <user1@example.net> no such user", match="user1@")]
    auth = {"shop": PASSWORD}
    async with CaptureServer(faults=faults, auth=auth, auth_require_tls=False) as server:
        mailer = mailer_for(server, username="shop", password=PASSWORD, allow_plaintext_auth=True)
        async with mailer, Outbox(url, telemetry=tracing) as outbox:
            await outbox.enqueue(message(0), key="order:0")
            await outbox.enqueue(message(1), key="order:1")
            await outbox.enqueue(message(0), key="order:0")  # already there: nothing stored
            await outbox.enqueue(message(2), key="welcome:user2@example.net")
            async with outbox.deliver(mailer, concurrency=2):
                with anyio.fail_after(10):
                    await wait_until(settled(outbox, 3))
    spans = exporter.get_finished_spans()
    assert {s.instrumentation_scope.name for s in spans if s.instrumentation_scope} == {"asyncmail"}
    enqueues = [attributes(s)["asyncmail.outbox.outcome"] for s in spans if s.name == "enqueue"]
    assert sorted(map(str, enqueues)) == ["created", "created", "created", "exists"]
    sends = {
        attributes(s)["asyncmail.outbox.key"]: attributes(s)["asyncmail.outbox.outcome"]
        for s in spans
        if s.name == "send"
    }
    assert sends == {
        "order:0": "delivered",
        "order:1": "failed",
        span_key("welcome:user2@example.net"): "delivered",
    }
    leased = [attributes(s)["asyncmail.outbox.keys"] for s in spans if s.name == "lease"]
    assert sorted(k for keys in leased for k in keys) == sorted(sends)
    for span in spans:
        text = repr(attributes(span))
        assert "@" not in text, span.name
        assert PASSWORD not in text, span.name


async def test_prometheus_counts_outcomes_retries_and_send_times(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    faults = [
        Fault.reply("rcpt", 550, "5.1.1 no such user", match="user1@"),
        Fault.reply("rcpt", 450, "4.2.1 busy", match="busy@"),
    ]
    metrics = PrometheusTelemetry()
    async with CaptureServer(faults=faults) as server:
        async with mailer_for(server) as mailer, Outbox(url, retry=LATER) as outbox:
            await outbox.enqueue(message(0), key="a")
            await outbox.enqueue(message(1), key="b")
            await outbox.enqueue(message(2, to=["x@example.net", "busy@example.net"]), key="c")
            async with outbox.deliver(mailer, concurrency=3, telemetry=metrics):
                with anyio.fail_after(10):
                    await wait_until(settled(outbox, 3))
            metrics.observe(await outbox.statistics())
    text = generate_latest(metrics.registry).decode()
    for line in (
        'asyncmail_outbox_messages_total{outcome="delivered"} 1.0',
        'asyncmail_outbox_messages_total{outcome="failed"} 1.0',
        'asyncmail_outbox_messages_total{outcome="retried"} 1.0',
        'asyncmail_outbox_messages_total{outcome="unknown"} 0.0',
        "asyncmail_outbox_retries_total 1.0",
        "asyncmail_outbox_send_seconds_count 3.0",
        "asyncmail_outbox_queue_depth 1.0",
    ):
        assert line in text.splitlines(), line

"""A worker process for the chaos tests: delivers from an outbox until it is killed.

Usage: python -m tests._outbox_worker OUTBOX_URL SMTP_URL RATE LEASE_SECONDS
"""

from __future__ import annotations

import sys

import anyio

from asyncmail import Mailer, Outbox, RetryPolicy, Timeouts

#: Transient failures come back quickly: the test is about outcomes, not patience.
QUICK_RETRY = RetryPolicy(attempts=4, base_delay=0.2, max_delay=0.5, jitter=True)
TIMEOUTS = Timeouts(connect=5, greeting=5, command=5, data_start=5, data_transfer=5, final_reply=5)


async def main(outbox_url: str, smtp_url: str, rate: str, lease: float) -> None:
    mailer = Mailer(smtp_url, max_connections=10, timeouts=TIMEOUTS)
    outbox = Outbox(outbox_url, retry=QUICK_RETRY, lease_seconds=lease)
    async with mailer, outbox, outbox.deliver(mailer, concurrency=10, rate=rate):
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))

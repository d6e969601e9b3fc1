"""How long does a Template take to turn one recipient row into a rendered Message?

Times, in the same run, per message (a different recipient row each iteration, Chinese display
names, about 2 KB of text and 3 KB of HTML, as in benchmarks/render.py):

a) ``template.render_parts(row)``: Jinja2 alone (subject, text and autoescaped HTML);
b) ``template.render(...)``: that plus building the ``Message``;
c) ``template.render(...).to_bytes()``: the whole way to the bytes sent in DATA;
d) as c) for an HTML-only template: includes the automatic HTML-to-text alternative;
e) for reference, the message renderer without a template: ``Message(...)`` from strings
   filled in beforehand, plus ``to_bytes()``.

Each result is µs per message: the best of the repeats and their median.

Usage::

    .venv/bin/python benchmarks/template.py [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

from render import NAMES, time_per_call  # benchmarks/render.py, beside this script

from asyncmail import Message, Template

SENDER = "商店 <shop@example.com>"
PARAGRAPH = (
    "Thank you for shopping with us. Your order has been confirmed and will ship soon. "
    "If you have any questions about your order, reply to this email or call our support line; "
    "our team answers during business hours."
)


def sources() -> tuple[str, str, str]:
    """Subject, text and HTML Jinja2 sources of about 2 KB and 3 KB."""
    subject = "Order #{{ order }} confirmed, {{ name }}"
    text = "Dear {{ name }},\n\nYour order #{{ order }} of {{ items }} item(s) is confirmed.\n\n"
    while len(text) < 2048:
        text += PARAGRAPH + "\n"
    html = '<html><body><p style="font-family:sans-serif">Dear {{ name }},</p>\n'
    html += "<p>Your order <b>#{{ order }}</b> of {{ items }} item(s) is confirmed.</p>\n"
    html += '<p><a href="https://shop.example.com/orders/{{ order }}">Track it</a></p>\n'
    while len(html) < 3072 - 20:
        html += f'<p style="margin:0 0 12px 0">{PARAGRAPH}</p>\n'
    return subject, text, html + "</body></html>\n"


def rows(n: int) -> list[dict[str, str]]:
    return [
        {
            "email": f"user{i}@example.net",
            "name": NAMES[i % len(NAMES)],
            "order": str(100000 + i),
            "items": str(i % 7 + 1),
        }
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer iterations, for a smoke run")
    args = parser.parse_args()
    iterations = 300 if args.quick else 3000
    subject, text, html = sources()
    both = Template(subject=subject, text=text, html=html)
    html_only = Template(subject=subject, html=html)
    data = rows(1000)
    filled = [both.render_parts(row) for row in data]

    def to(i: int) -> tuple[str, str]:
        row = data[i % len(data)]
        return (row["name"], row["email"])

    cases: list[tuple[str, Callable[[int], object]]] = [
        ("a) Jinja2 render_parts (subject+text+html)", lambda i: both.render_parts(data[i % 1000])),
        (
            "b) Template.render -> Message",
            lambda i: both.render(sender=SENDER, to=to(i), variables=data[i % 1000]),
        ),
        (
            "c) Template.render -> Message -> to_bytes()",
            lambda i: both.render(sender=SENDER, to=to(i), variables=data[i % 1000]).to_bytes(),
        ),
        (
            "d) HTML-only template (+ html-to-text) -> to_bytes()",
            lambda i: html_only.render(
                sender=SENDER, to=to(i), variables=data[i % 1000]
            ).to_bytes(),
        ),
        (
            "e) no template: Message(...) from filled strings -> to_bytes()",
            lambda i: Message(
                sender=SENDER,
                to=to(i),
                subject=filled[i % 1000].subject,
                text=filled[i % 1000].text,
                html=filled[i % 1000].html,
            ).to_bytes(),
        ),
    ]
    print(f"Python {sys.version.split()[0]}, {iterations} messages x {args.repeats} repeats")
    print(f"{'case':<66} {'best µs':>9} {'median µs':>10}")
    for label, fn in cases:
        times = time_per_call(fn, iterations, args.repeats)
        print(f"{label:<66} {min(times):>9.1f} {statistics.median(times):>10.1f}")


if __name__ == "__main__":
    main()

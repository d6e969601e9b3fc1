"""How long does one personalised message take to build and render?

Times, in the same run and on the same content:

a) asyncmail: ``Message(...)`` construction plus ``to_bytes()``, with a different recipient
   (Chinese display name) each iteration; and ``to_bytes()`` alone on a built message;
b) the stdlib: ``EmailMessage`` with ``set_content`` + ``add_alternative`` and UTF-8 headers,
   serialised with ``as_bytes(policy=SMTP)``.

Three bodies: Chinese (base64 parts); English with the Chinese name in it (quoted-printable);
and the same English as one line each, as minified HTML and template output come (2 KB text,
3 KB HTML, quoted-printable: a line over 998 octets cannot go 7bit).
Each result is µs per message: the best of the repeats and their median.

Usage::

    .venv/bin/python benchmarks/render.py [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from email import policy
from email.message import EmailMessage

from asyncmail import Message

NAMES = ["张三", "李四", "王五", "赵六", "孙七", "周八", "吴九", "郑十", "欧阳娜娜", "司马相如"]
SUBJECT = "订单确认 #{n} — 感谢您的购买"

ZH_PARAGRAPH = (
    "感谢您在我们的商店购物。您的订单已经确认，我们会尽快为您安排发货。"
    "如果您对订单有任何疑问，请随时回复此邮件或者拨打客服电话，我们的客服团队会在工作时间内为您解答。"
)
EN_PARAGRAPH = (
    "Thank you for shopping with us. Your order has been confirmed and will ship soon. "
    "If you have any questions about your order, reply to this email or call our support line; "
    "our team answers during business hours.\n"
)


def bodies(
    paragraph: str, text_size: int, html_size: int, one_line: bool = False
) -> tuple[str, str]:
    """Return (text, html) templates of about the given sizes in UTF-8 octets.

    With ``one_line``, each body is a single line (no line end but the final one).
    """
    text = "{name}，您好！\n\n" if paragraph is ZH_PARAGRAPH else "Dear {name},\n\n"
    while len(text.encode()) < text_size:
        text += paragraph + "\n"
    html = '<html><body><p style="font-family:sans-serif">{name}：</p>\n'
    while len(html.encode()) < html_size - 20:
        html += f'<p style="margin:0 0 12px 0">{paragraph}</p>\n'
    html += "</body></html>\n"
    if one_line:
        text = text.replace("\n", " ").rstrip() + "\n"
        html = html.replace("\n", "").replace("</p>", "</p> ") + "\n"
    return text, html


def time_per_call(fn: Callable[[int], object], iterations: int, repeats: int) -> list[float]:
    """Run ``fn(i)`` ``iterations`` times per repeat; return µs per call for each repeat."""
    results = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(iterations):
            fn(i)
        results.append((time.perf_counter() - start) / iterations * 1e6)
    return results


def run(label: str, paragraph: str, repeats: int, quick: bool, one_line: bool = False) -> None:
    text_t, html_t = bodies(paragraph, 2048, 3072, one_line)
    # The templates are filled in beforehand, one body pair per name: filling a template is
    # the caller's work (the same for both libraries), not the library's.
    filled = [(text_t.format(name=name), html_t.format(name=name)) for name in NAMES]

    def asyncmail_build_and_render(i: int) -> bytes:
        name = NAMES[i % len(NAMES)]
        text, html = filled[i % len(NAMES)]
        return Message(
            sender="商店 <shop@example.com>",
            to=(name, f"user{i}@example.net"),
            subject=SUBJECT.format(n=i),
            text=text,
            html=html,
            unsubscribe_mailto=f"unsubscribe+{i}@example.com",
        ).to_bytes()

    built = Message(
        sender="商店 <shop@example.com>",
        to=(NAMES[0], "user@example.net"),
        subject=SUBJECT.format(n=1),
        text=filled[0][0],
        html=filled[0][1],
    )

    def asyncmail_render_only(i: int) -> bytes:
        return built.to_bytes()

    def stdlib_build_and_render(i: int) -> bytes:
        name = NAMES[i % len(NAMES)]
        text, html = filled[i % len(NAMES)]
        msg = EmailMessage()
        msg["From"] = "商店 <shop@example.com>"
        msg["To"] = f"{name} <user{i}@example.net>"
        msg["Subject"] = SUBJECT.format(n=i)
        msg["List-Unsubscribe"] = f"<mailto:unsubscribe+{i}@example.com>"
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
        return msg.as_bytes(policy=policy.SMTP)

    size = len(asyncmail_build_and_render(0))
    stdlib_size = len(stdlib_build_and_render(0))
    scale = 10 if quick else 1
    fast = time_per_call(asyncmail_build_and_render, 20000 // scale, repeats)
    render_only = time_per_call(asyncmail_render_only, 20000 // scale, repeats)
    slow = time_per_call(stdlib_build_and_render, 400 // scale, repeats)
    print(f"\n{label}: text {len(text_t.encode())} B, html {len(html_t.encode())} B template")
    print(f"  message size: asyncmail {size} B, stdlib {stdlib_size} B")
    for name, values in [
        ("asyncmail Message(...) + to_bytes()", fast),
        ("asyncmail to_bytes() alone", render_only),
        ("stdlib EmailMessage + as_bytes(SMTP)", slow),
    ]:
        print(
            f"  {name:40s} best {min(values):8.1f} µs   median {statistics.median(values):8.1f} µs"
        )
    print(
        f"  ratio stdlib / asyncmail (build + render): best {min(slow) / min(fast):.0f}x, "
        f"median {statistics.median(slow) / statistics.median(fast):.0f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="10x fewer iterations")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; {args.repeats} repeats")
    run("Chinese body (base64)", ZH_PARAGRAPH, args.repeats, args.quick)
    run("English body with Chinese name (quoted-printable)", EN_PARAGRAPH, args.repeats, args.quick)
    run(
        "English one-line bodies with Chinese name (quoted-printable)",
        EN_PARAGRAPH,
        args.repeats,
        args.quick,
        one_line=True,
    )


if __name__ == "__main__":
    main()

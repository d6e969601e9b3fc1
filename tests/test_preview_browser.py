"""The preview in a real browser: Debian's chromium, driven headless by Selenium.

Mail sent after the page opened shows up in the list without a reload; its HTML renders in
the sandboxed iframe (CJK text, a table), where neither its script nor its remote image
reaches the network. The message page is saved as a screenshot in tmp_path; with
``ASYNCMAIL_UPDATE_SCREENSHOT=1`` it also replaces docs/images/preview.png.

Without chromium and chromedriver the tests are skipped, except in CI (``CI=true``), where
they fail: apt-get install chromium chromium-driver fonts-noto-cjk.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio
import pytest

from asyncmail import Attachment, Message

from ._preview import SENDER, running, send

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

MISSING = "chromium, chromium-driver or selenium missing: apt-get install chromium chromium-driver"
NO_CJK_FONT = "no CJK font to draw the screenshot with: apt-get install fonts-noto-cjk"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "images" / "preview.png"
#: Seconds the page has to show what arrived.
WAIT = 15


def _chromium() -> tuple[str, str] | None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def _has_cjk_font() -> bool:
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return False
    found = subprocess.run([fc_list, ":lang=zh"], capture_output=True, text=True, check=False)
    return bool(found.stdout.strip())


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """A headless chromium through Debian's chromedriver (never Selenium Manager's downloads)."""
    found = _chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ModuleNotFoundError:
        found = None
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING, pytrace=False)
        pytest.skip(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,860",
        "--lang=en-US",
        "--no-first-run",
        "--disable-background-networking",  # only loopback: no update checks, no sync
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Tripwire:
    """A port on 127.0.0.1 that a mail's script or remote image would connect to.

    A thread accepts and hangs up on every connection, counting them, so a browser that
    does reach it fails the assertion at once instead of waiting for a reply.
    """

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def cjk_order(
    tripwire: Tripwire, subject: str = "「注文確認」ご注文ありがとうございます"
) -> Message:
    html = f"""<html><body style="font-family: sans-serif">
<img id=logo src="cid:logo@shop.example" alt="logo" width=120 height=24>
<h2>你好，陈静 — ご注文を承りました</h2>
<table border=1 cellpadding=6 style="border-collapse: collapse">
<tr><th>商品</th><th>数量</th><th>价格</th></tr>
<tr><td>宇治抹茶</td><td>2</td><td>¥3,200</td></tr>
<tr><td>龙井茶</td><td>1</td><td>¥1,800</td></tr>
</table>
<p id=tracked>合計 ¥5,000</p>
<img src="{tripwire.url}/pixel.png" alt="">
<script>new Image().src = "{tripwire.url}/script"; document.body.append("SCRIPT RAN")</script>
</body></html>"""
    return Message(
        sender=SENDER,
        to="陈静 <chen@example.com>",
        subject=subject,
        text="你好，陈静: 宇治抹茶 x2, 龙井茶 x1",
        html=html,
        attachments=[
            Attachment(
                filename="logo.png",
                content=png(120, 24, (9, 105, 218)),
                inline=True,
                content_id="logo@shop.example",
            )
        ],
    )


def _open_list(driver: WebDriver, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, WAIT).until(ec.visibility_of_element_located((By.ID, "empty")))
    driver.execute_script("window.notReloaded = true")


def _subjects_without_reload(driver: WebDriver, count: int) -> list[str]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def listed(d: WebDriver) -> list[str] | Literal[False]:
        cells = d.find_elements(By.CSS_SELECTOR, "#messages tbody td.subject")
        return [c.text for c in cells] if len(cells) == count else False

    subjects: list[str] = WebDriverWait(driver, WAIT).until(listed)
    assert driver.execute_script("return window.notReloaded") is True
    return subjects


def _open_message_and_read_frame(
    driver: WebDriver, subject: str, screenshot: Path
) -> tuple[str, object]:
    """The text of the message's HTML part, and the width of its inline (cid:) image."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.LINK_TEXT, subject).click()
    WebDriverWait(driver, WAIT).until(ec.text_to_be_present_in_element((By.ID, "subject"), subject))
    frame = driver.find_element(By.ID, "body-html")
    assert frame.get_attribute("sandbox") == ""
    driver.switch_to.frame(frame)
    try:
        WebDriverWait(driver, WAIT).until(
            ec.text_to_be_present_in_element((By.TAG_NAME, "table"), "宇治抹茶")
        )
        text: str = driver.find_element(By.TAG_NAME, "body").text
        logo_width = driver.find_element(By.ID, "logo").get_property("naturalWidth")
    finally:
        driver.switch_to.default_content()
    driver.save_screenshot(str(screenshot))
    return text, logo_width


async def test_new_mail_shows_up_live_and_its_html_renders_sandboxed(
    browser: WebDriver, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    tripwire = Tripwire()
    request.addfinalizer(tripwire.close)
    subject = "「注文確認」ご注文ありがとうございます"
    async with running(tmp_path) as server:
        await anyio.to_thread.run_sync(_open_list, browser, server.web.url)
        await send(server.smtp.url, cjk_order(tripwire, subject))
        subjects = await anyio.to_thread.run_sync(_subjects_without_reload, browser, 1)
        hostile = '<script>alert("x")</script><b>not bold</b>'
        await send(server.smtp.url, cjk_order(tripwire, hostile))
        both = await anyio.to_thread.run_sync(_subjects_without_reload, browser, 2)
        bold = browser.find_elements("css selector", "#messages b")
        screenshot = tmp_path / "preview.png"
        text, logo_width = await anyio.to_thread.run_sync(
            _open_message_and_read_frame, browser, subject, screenshot
        )
    assert subjects == [subject]
    assert both == [hostile, subject]  # shown as text, newest first
    assert bold == []
    assert "你好，陈静" in text
    assert "宇治抹茶 2 ¥3,200" in text  # the table's row
    assert "SCRIPT RAN" not in text
    assert logo_width == 120  # the inline image, served from the message itself
    assert tripwire.connections == 0  # neither the script nor the remote image went out
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("ASYNCMAIL_UPDATE_SCREENSHOT") == "1":
        assert _has_cjk_font(), NO_CJK_FONT  # else the committed picture shows boxes
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, SCREENSHOT)

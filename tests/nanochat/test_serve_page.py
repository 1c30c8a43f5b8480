"""The chat page in a real headless browser (Debian's chromium driven by playwright): load it, send
a message, watch the reply stream in, start a new chat; model text is shown as text, never HTML."""
import os
import shutil
import time

import pytest
from playwright import sync_api
from serve_testing import RunningServer

import nanochat.engine

CHROMIUM = os.environ.get("NANOCHAT_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")

if not os.path.exists(CHROMIUM):
    pytest.fail(f"the page test needs Debian's chromium at {CHROMIUM} (.ci/run installs it)", pytrace=False)


@pytest.fixture(scope="module")
def running(tok, serve_model):
    with RunningServer(serve_model, tok) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, running):
    context = browser.new_context()
    requests = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    page.goto(running.url + "/")
    yield page
    assert all(url.startswith(running.url) for url in requests), requests  # self-contained: no CDN
    context.close()


def send(page, text):
    page.fill("#input", text)
    page.click("#send")


def test_send_a_message_and_watch_the_reply_stream(page, monkeypatch):
    original = nanochat.engine.Sequence.sample

    def paced(self, logits):  # ~30 ms a token, so the pieces reach the page one by one however busy the machine
        time.sleep(0.03)
        return original(self, logits)
    monkeypatch.setattr(nanochat.engine.Sequence, "sample", paced)
    assert page.title() == "nanochat"
    page.fill("#max-tokens", "40")
    page.fill("#temperature", "0")
    lengths = []
    page.expose_function("seen", lambda n: lengths.append(n))
    # record the reply's length each time it changes, to see it grow piece by piece
    page.evaluate("""() => new MutationObserver(() => {
        const r = document.querySelector('.assistant'); if (r) window.seen(r.textContent.length);
    }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true})""")
    send(page, "hello")
    page.wait_for_function("() => !document.getElementById('send').disabled", timeout=30_000)
    assert page.inner_text(".user") == "hello"
    reply = page.inner_text(".assistant")
    assert len(reply) > 10
    assert len(set(lengths)) > 3  # it grew in several steps, not all at once
    send(page, "and again")
    page.wait_for_function("() => document.querySelectorAll('.assistant').length == 2 && "
                           "!document.getElementById('send').disabled", timeout=30_000)
    assert page.locator(".user").count() == 2
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0
    send(page, "fresh start")
    page.wait_for_function("() => !document.getElementById('send').disabled", timeout=30_000)
    assert page.locator(".user").count() == 1  # the old conversation is gone from the page


def test_model_text_is_inserted_as_text(page, running, monkeypatch):
    tok = running.server.tokenizer
    script = tok.encode("<b>x</b><img src=x onerror=alert(1)>")
    monkeypatch.setattr(nanochat.engine.Sequence, "sample", lambda self, logits: script[len(self.tokens)])
    page.fill("#max-tokens", str(len(script)))
    send(page, "say something bold")
    page.wait_for_function("() => !document.getElementById('send').disabled", timeout=30_000)
    assert page.inner_text(".assistant") == "<b>x</b><img src=x onerror=alert(1)>"
    assert page.locator(".assistant b").count() == 0 and page.locator(".assistant img").count() == 0


def test_an_error_is_shown_and_the_chat_goes_on(page, running):
    page.fill("#temperature", "7")  # out of range: the server answers 400
    send(page, "hi")
    page.wait_for_selector(".error", timeout=30_000)
    assert "temperature" in page.inner_text(".error")
    page.fill("#temperature", "0.5")
    send(page, "hi again")
    page.wait_for_function("() => document.querySelectorAll('.assistant').length == 1 && "
                           "!document.getElementById('send').disabled", timeout=30_000)
    assert page.inner_text(".assistant")


def test_a_long_chat_fits_the_context(page):
    """The default 256 max tokens exceed the tiny model's 128-token context: the page lets the reply
    take the room left, and drops the oldest exchanges once the conversation itself is too long."""
    for i in range(4):
        send(page, f"message {i} " + "word " * 10)
        page.wait_for_function(f"() => document.querySelectorAll('.assistant').length == {i + 1} && "
                               "!document.getElementById('send').disabled", timeout=30_000)
    assert page.locator(".error").count() == 0
    assert all(page.locator(".assistant").all_inner_texts())

"""The web page in a real browser (Debian's chromium driven by Playwright) against a real server process."""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, expect, sync_playwright

from tests.helpers import blake3_hex, png
from tests.samples import SAMPLES
from tests.server_process import RhinoBoxProcess

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_FLAGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SETTLE_MS: Final = 30_000  # a bound on waiting for a page state, so a stuck page fails instead of hanging
TUS_MIB: Final = 40  # over the page's 16 MiB tus threshold and its 32 MiB chunk: two PATCHes
RW_TOKEN: Final = "web-rw-token"
RO_TOKEN: Final = "web-ro-token"
SCREENSHOT_DIR_ENV: Final = "RHINOBOX_WEB_SCREENSHOTS"  # where screenshots go (default: the test's tmp dir)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser_process(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    yield chromium
    chromium.close()


@pytest.fixture
def browser(browser_process: Browser) -> Iterator[Browser]:
    """The shared browser; the pages a test opened are closed after it."""
    yield browser_process
    for context in browser_process.contexts:
        context.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RhinoBoxProcess]:
    with RhinoBoxProcess(tmp_path / "data") as process:
        yield process


def open_page(browser: Browser, url: str, errors: list[str] | None = None) -> Page:
    """A fresh page (own storage) on `url`; script errors are collected in `errors` when given."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True).new_page()
    if errors is not None:
        page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    return page


def wait_ready(page: Page, mode: str = "rw") -> None:
    """Until the page has wired its controls (`rw`: uploads too; `ro`: read-only)."""
    expect(page.locator("body")).to_have_attribute("data-ready", mode, timeout=SETTLE_MS)


def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"web-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def write_files(folder: Path, files: dict[str, bytes]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return [str(folder / name) for name in files]


def wait_settled(page: Page, files: int) -> None:
    """Until the queue shows `files` files, each stored, duplicate or failed."""
    done = page.locator('.row:is([data-state="stored"], [data-state="duplicate"], [data-state="failed"])')
    expect(done).to_have_count(files, timeout=SETTLE_MS)
    expect(page.locator(".row")).to_have_count(files)
    expect(page.locator("#overall-text")).to_have_attribute("data-active", "0", timeout=SETTLE_MS)


def states(page: Page) -> dict[str, str]:
    """Each queued file's shown state, by name (the list shows every row when it is short)."""
    rows = page.locator(".row")
    return {
        rows.nth(i).get_attribute("data-name") or "": rows.nth(i).get_attribute("data-state") or ""
        for i in range(rows.count())
    }


def row(page: Page, name: str) -> Any:
    return page.locator(f'.row[data-name="{name}"]')


def api(server: RhinoBoxProcess, method: str, path: str, body: bytes | None = None, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(server.url + path, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def access_log(server: RhinoBoxProcess) -> list[dict[str, Any]]:
    """The server's access log so far: one dict per answered request."""
    records = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        if '"logger":"rhinobox.access"' in line:
            records.append(json.loads(line))
    return records


def upload_requests(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests that may carry file bytes: PUT /blobs/{hash}, /ingest, and tus PATCH/POST."""
    return [
        r
        for r in records
        if (r["method"] == "PUT" and r["route"] == "/blobs/{hash}")
        or r["path"].startswith("/ingest")
        or (r["path"].startswith("/uploads") and r["method"] in ("POST", "PATCH"))
    ]


# -- upload -------------------------------------------------------------------------------------------------


def test_upload_shows_each_outcome_and_retry_fixes_only_the_failure(
    browser: Browser, server: RhinoBoxProcess, tmp_path: Path
) -> None:
    known = b"already on the server\n" * 50
    api(server, "PUT", f"/blobs/{blake3_hex(known)}", known)
    flaky = os.urandom(300_000)  # over the page's 256 KiB batch limit: sent alone with PUT /blobs/{hash}
    files = {
        "photo.png": png(1),
        "notes.txt": b"some notes\n" * 20,
        "data.bin": os.urandom(200_000),
        "known.txt": known,
        "empty.txt": b"",
        "flaky.bin": flaky,
    }
    paths = write_files(tmp_path / "drop", files)
    errors: list[str] = []
    page = open_page(browser, server.url, errors)
    wait_ready(page)
    refused: list[str] = []

    def overloaded_once(route: Route) -> None:
        if not refused:
            refused.append(route.request.url)
            body = {"error": {"code": "overloaded", "message": "the ingest queue is full, retry later"}}
            route.fulfill(status=503, json=body, headers={"Retry-After": "1"})
        else:
            route.continue_()

    page.route(f"**/blobs/{blake3_hex(flaky)}", overloaded_once)
    page.set_input_files("#pick-files", paths)
    wait_settled(page, len(files))
    assert states(page) == {
        "photo.png": "stored",
        "notes.txt": "stored",
        "data.bin": "stored",
        "known.txt": "duplicate",
        "empty.txt": "failed",
        "flaky.bin": "failed",
    }
    expect(row(page, "empty.txt").locator(".detail")).to_have_text(re.compile(r"^empty_file: "))
    expect(row(page, "flaky.bin").locator(".detail")).to_have_text("overloaded: the ingest queue is full, retry later")
    expect(page.locator("#overall-text")).to_contain_text("6 files, 3 stored, 1 duplicate, 2 failed · 100%")
    screenshot(page, tmp_path, "upload-failed")

    page.click("#retry-failed")
    expect(row(page, "flaky.bin")).to_have_attribute("data-state", "stored", timeout=SETTLE_MS)
    wait_settled(page, len(files))
    assert states(page)["empty.txt"] == "failed"  # the server refuses it again, with its reason
    assert refused == [f"{server.url}/blobs/{blake3_hex(flaky)}"]

    ingests = [r for r in access_log(server) if r["path"] == "/ingest"]
    assert ingests  # the small files went several to a request
    assert {r["status"] for r in ingests} <= {200, 207, 422}  # 422: a batch of only the empty file

    # The page and the server's catalog agree.
    listed = {entry["hash"]: entry for entry in api(server, "GET", "/files")["files"]}
    expected = {blake3_hex(content) for name, content in files.items() if content}
    assert set(listed) == expected
    assert listed[blake3_hex(png(1))]["category"].startswith("images/")
    uploads = api(server, "GET", f"/files/{blake3_hex(known)}/meta")["uploads"]
    assert len(uploads) == 2  # the API's first upload, then the page's record of the same content
    assert uploads[1]["name"] == "known.txt"
    expect(page.locator("#files li[data-hash]")).to_have_count(len(expected), timeout=SETTLE_MS)
    assert errors == []


def test_a_second_drop_of_the_same_files_sends_no_bytes(
    browser: Browser, server: RhinoBoxProcess, tmp_path: Path
) -> None:
    files = {f"file{i}.bin": os.urandom(50_000 + i) for i in range(5)}
    paths = write_files(tmp_path / "drop", files)
    page = open_page(browser, server.url)
    wait_ready(page)
    page.set_input_files("#pick-files", paths)
    wait_settled(page, len(files))
    assert set(states(page).values()) == {"stored"}
    before = len(access_log(server))

    page.click("#clear-done")
    expect(page.locator(".row")).to_have_count(0)
    page.set_input_files("#pick-files", paths)
    wait_settled(page, len(files))
    assert set(states(page).values()) == {"duplicate"}
    second = access_log(server)[before:]
    sent = upload_requests(second)
    assert len(sent) == len(files)  # one empty PUT per file records the upload
    assert all(r["bytes_received"] == 0 for r in sent), sent
    assert any(r["path"] == "/blobs/missing" for r in second)
    meta = api(server, "GET", f"/files/{blake3_hex(files['file0.bin'])}/meta")
    assert meta["upload_count"] == 2


def test_a_large_file_goes_by_tus_and_resumes_after_a_reload(
    browser: Browser, server: RhinoBoxProcess, tmp_path: Path
) -> None:
    content = os.urandom(TUS_MIB * 1024 * 1024)
    [path] = write_files(tmp_path / "drop", {"big.bin": content})
    page = open_page(browser, server.url)
    wait_ready(page)
    cut: list[str] = []

    def cut_second_patch(route: Route) -> None:
        """The first chunk goes through; then the connection is lost (each retry too) until the page reloads."""
        if route.request.method == "PATCH" and route.request.headers.get("upload-offset") != "0":
            cut.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/uploads/*", cut_second_patch)
    page.set_input_files("#pick-files", [path])
    expect(row(page, "big.bin")).to_have_attribute("data-state", "uploading", timeout=SETTLE_MS)
    page.wait_for_timeout(100)
    for _ in range(SETTLE_MS // 100):
        if cut:
            break
        page.wait_for_timeout(100)
    assert cut
    page.reload()
    wait_ready(page)
    page.unroute("**/uploads/*")
    expect(page.locator("#resume")).to_contain_text("big.bin", timeout=SETTLE_MS)
    page.set_input_files("#pick-files", [path])
    expect(row(page, "big.bin")).to_have_attribute("data-state", "stored", timeout=SETTLE_MS)

    records = access_log(server)
    creates = [r for r in records if r["method"] == "POST" and r["path"].startswith("/uploads")]
    patches = [r for r in records if r["method"] == "PATCH"]
    heads = [r for r in records if r["method"] == "HEAD" and r["path"].startswith("/uploads/")]
    assert [r["status"] for r in creates] == [201]  # one upload, resumed rather than restarted
    assert heads  # the reloaded page asked where to resume
    # Resumed, not restarted: the acknowledged first chunk was not sent again.
    assert sum(r["bytes_received"] for r in patches) == len(content)
    assert not [r for r in records if r["route"] == "/blobs/{hash}" and r["bytes_received"] > 0]
    upload_id = patches[-1]["path"].rsplit("/", 1)[1]
    state = api(server, "GET", f"/uploads/{upload_id}")
    assert state["complete"] is True
    assert state["result"]["hash"] == blake3_hex(content)
    assert api(server, "GET", f"/files/{blake3_hex(content)}/meta")["size"] == len(content)
    expect(page.locator("#resume")).to_be_hidden()


# -- browse and find -------------------------------------------------------------------------------------


def put_files(server: RhinoBoxProcess, files: dict[str, bytes], token: str | None = None) -> dict[str, str]:
    """Stores `files` through the API; their hashes by name."""
    hashes = {}
    for name, content in files.items():
        digest = blake3_hex(content)
        request = urllib.request.Request(
            f"{server.url}/blobs/{digest}",
            data=content,
            method="PUT",
            headers={"X-Filename": name, **({"Authorization": f"Bearer {token}"} if token else {})},
        )
        with urllib.request.urlopen(request, timeout=30):
            hashes[name] = digest
    return hashes


def search(page: Page, **fields: str) -> None:
    page.click('#filters button[type="reset"]')
    for name, value in fields.items():
        page.fill(f'#filters [name="{name}"]', value)
    page.click('#filters button[type="submit"]')


def listed(page: Page) -> list[str]:
    return page.locator("#files li[data-hash] button.open").all_inner_texts()


def test_browse_filter_preview_download_and_delete(browser: Browser, server: RhinoBoxProcess, tmp_path: Path) -> None:
    wav = SAMPLES["wav"][0](3)
    files = {
        "photo.png": png(2),
        "readme.txt": b"RhinoBox keeps every byte once.\n",
        "song.wav": wav,
        "paper.pdf": SAMPLES["pdf"][0](4),
        "big.bin": os.urandom(2 * 1024 * 1024),
    }
    hashes = put_files(server, files)
    errors: list[str] = []
    page = open_page(browser, server.url, errors)
    wait_ready(page)
    expect(page.locator("#files li[data-hash]")).to_have_count(5)
    expect(page.locator("#stats")).to_contain_text("5 files")

    search(page, name="READ")
    expect(page.locator("#files li[data-hash]")).to_have_count(1)
    assert listed(page) == ["readme.txt"]
    search(page, category="images")
    expect(page.locator("#files li[data-hash]")).to_have_count(1)
    assert listed(page) == ["photo.png"]
    search(page, min_mb="1")
    expect(page.locator("#files li[data-hash]")).to_have_count(1)
    assert listed(page) == ["big.bin"]
    search(page, since="2999-01-01")
    expect(page.locator("#files")).to_contain_text("No files match.")
    search(page)
    expect(page.locator("#files li[data-hash]")).to_have_count(5)
    page.check('input[name="view"][value="grid"]')
    expect(page.locator("#files")).to_have_class("files grid")
    screenshot(page, tmp_path, "browse-grid")
    page.check('input[name="view"][value="list"]')

    page.click('#files button.open:text-is("photo.png")')
    image = page.locator("#viewer-body img")
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth === 4", arg=image.element_handle())
    expect(page.locator("#viewer-meta")).to_contain_text("photo.png")
    expect(page.locator("#viewer-meta")).to_contain_text("image/png")
    with page.expect_download() as download_info:
        page.click("#viewer-download")
    download = download_info.value
    assert download.suggested_filename == "photo.png"
    assert Path(download.path()).read_bytes() == files["photo.png"]
    page.click("#viewer-close")

    page.click('#files button.open:text-is("readme.txt")')
    expect(page.locator("#viewer-body pre")).to_have_text("RhinoBox keeps every byte once.\n")
    page.click("#viewer-close")

    page.click('#files button.open:text-is("song.wav")')
    audio = page.locator("#viewer-body audio")
    expect(audio).to_have_attribute("src", f"/files/{hashes['song.wav']}")
    page.wait_for_function("el => el.readyState >= 1", arg=audio.element_handle(), timeout=SETTLE_MS)
    media = [r for r in access_log(server) if r["path"] == f"/files/{hashes['song.wav']}" and r["method"] == "GET"]
    assert any(r["status"] == 206 for r in media)  # the browser fetched the audio with Range
    page.click("#viewer-close")

    page.click('#files button.open:text-is("paper.pdf")')
    expect(page.locator("#viewer-body iframe")).to_have_attribute("src", f"/files/{hashes['paper.pdf']}")
    page.click("#viewer-close")

    # Keyboard: Tab reaches both file pickers (native inputs: Enter opens them); Escape closes the viewer.
    page.click("#upload-title")  # Tab now starts from the upload section's title
    focused = []
    for _ in range(2):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("() => document.activeElement.id"))
    assert focused == ["pick-files", "pick-folder"]
    page.locator('#files button.open:text-is("readme.txt")').focus()
    page.keyboard.press("Enter")
    expect(page.locator("#viewer")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#viewer")).to_be_hidden()

    page.once("dialog", lambda dialog: dialog.accept())
    page.click('#files button.open:text-is("big.bin")')
    page.click("#viewer-delete")
    expect(page.locator(f'#files li[data-hash="{hashes["big.bin"]}"]')).to_have_count(0)
    expect(page.locator("#stats")).to_contain_text("4 files")
    with pytest.raises(urllib.error.HTTPError) as gone:
        api(server, "GET", f"/files/{hashes['big.bin']}/meta")
    assert gone.value.code == 404
    assert errors == []


# -- tokens ------------------------------------------------------------------------------------------------


def test_token_prompt_and_read_only_mode(browser: Browser, tmp_path: Path) -> None:
    tokens = f"{RW_TOKEN}:rw,{RO_TOKEN}:ro"
    with RhinoBoxProcess(tmp_path / "data", RHINOBOX_API_TOKENS=tokens) as server:
        hashes = put_files(server, {"cat.png": png(5)}, token=RW_TOKEN)
        page = open_page(browser, server.url)
        expect(page.locator("#token-panel")).to_be_visible()
        expect(page.locator("#main")).to_be_hidden()
        page.fill("#token-input", "wrong")
        page.click('#token-form button[type="submit"]')
        expect(page.locator("#token-error")).to_contain_text("refused")

        page.fill("#token-input", RO_TOKEN)
        page.click('#token-form button[type="submit"]')
        wait_ready(page, "ro")
        expect(page.locator("#mode")).to_contain_text("read-only")
        expect(page.locator("#upload")).to_be_hidden()
        expect(page.locator("#files li[data-hash]")).to_have_count(1)
        page.click('#files button.open:text-is("cat.png")')
        image = page.locator("#viewer-body img")
        expect(image).to_have_attribute("src", re.compile(r"^blob:"))  # fetched with the token
        page.wait_for_function("img => img.complete && img.naturalWidth === 4", arg=image.element_handle())
        expect(page.locator("#viewer-delete")).to_be_hidden()
        screenshot(page, tmp_path, "read-only")
        page.click("#viewer-close")
        assert page.evaluate("() => sessionStorage.getItem('rhinobox.token')") == RO_TOKEN
        assert page.evaluate("() => Object.keys(localStorage).filter(k => k.includes('token'))") == []
        writes = [r for r in access_log(server) if r["method"] not in ("GET", "HEAD", "OPTIONS")]
        assert [(r["path"], r["status"]) for r in writes] == [
            (f"/blobs/{hashes['cat.png']}", 201),
            ("/blobs/missing", 403),
        ]

        page.click("#change-token")
        page.fill("#token-input", RW_TOKEN)
        page.click('#token-form button[type="submit"]')
        wait_ready(page, "rw")
        expect(page.locator("#upload")).to_be_visible()
        expect(page.locator("#mode")).to_have_text("read-write token")
        [path] = write_files(tmp_path / "drop", {"new.txt": b"written with the rw token\n"})
        page.set_input_files("#pick-files", [path])
        wait_settled(page, 1)
        assert states(page) == {"new.txt": "stored"}
        page.click('#files button.open:text-is("cat.png")')
        expect(page.locator("#viewer-delete")).to_be_visible()

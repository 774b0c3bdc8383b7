"""Categorization rules: defaults, validation, run-time replacement under the read-write lock."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from rhinobox.app import create_app
from rhinobox.errors import InvalidRules
from rhinobox.ingest.categories import DEFAULT_RULES, MEMO_ENTRIES, Categorizer, CategoryRules
from rhinobox.ingest.rwlock import ReadWriteLock
from tests.helpers import AiohttpClient, Client, assert_error, form, make_settings
from tests.samples import make_sample
from tests.server_process import run_cli, server_env


@pytest.mark.parametrize(
    ("mime", "extension", "expected"),
    [
        ("image/png", ".png", "images/png"),
        ("image/png", ".txt", "images/png"),
        ("video/mp4", "", "videos/mp4"),
        ("audio/mpeg", ".mp3", "audio/mpeg"),
        ("application/pdf", ".pdf", "documents/pdf"),
        ("application/zip", ".zip", "archives/zip"),
        ("text/x-script.python", ".py", "code/python"),
        ("text/plain", ".py", "code/python"),
        ("text/plain", ".txt", "documents/text"),
        ("text/plain", "", "documents/text"),
        ("application/octet-stream", ".mp3", "audio/mpeg"),
        ("application/octet-stream", "", "other/octet-stream"),
        ("application/x-weird+thing", "", "other/x-weird+thing"),
    ],
)
def test_default_rules(mime: str, extension: str, expected: str) -> None:
    assert CategoryRules.parse(dict(DEFAULT_RULES)).categorize(mime, extension) == expected


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"mime": {"image/*": "Images/Upper"}},
        {"mime": {"not a mime": "images/x"}},
        {"mime": {"image/*": "images"}},
        {"mime": {"image/*": "../escape/x"}},
        {"extension": {"png": "images/png"}},
        {"generic": "text/plain"},
        {"default": 5},
        {"unknown": {}},
    ],
)
def test_invalid_rules_are_refused(document: Any) -> None:
    with pytest.raises(InvalidRules):
        CategoryRules.parse(document)


async def test_get_and_put_categories_change_ingest_at_run_time(client: Client) -> None:
    current = await (await client.get("/categories")).json()
    assert current["mime"]["image/*"] == "images/{subtype}"
    current["mime"]["image/png"] = "pictures/lossless"
    response = await client.put("/categories", json=current)
    assert response.status == 200
    upload = await client.post("/ingest", data=form([make_sample("png", 1)]))
    assert (await upload.json())["results"][0]["category"] == "pictures/lossless"
    assert (await (await client.get("/categories")).json())["mime"]["image/png"] == "pictures/lossless"


@pytest.mark.parametrize("body", [b"{not json", b'{"mime": {"image/*": 7}}', b'"a string"'])
async def test_bad_rule_set_is_refused_whole_and_old_rules_stay(client: Client, body: bytes) -> None:
    before = await (await client.get("/categories")).json()
    response = await client.put("/categories", data=body, headers={"Content-Type": "application/json"})
    await assert_error(response, 400, "invalid_rules")
    assert await (await client.get("/categories")).json() == before
    upload = await client.post("/ingest", data=form([make_sample("png", 2)]))
    assert (await upload.json())["results"][0]["category"] == "images/png"


async def test_replaced_rules_survive_a_restart(aiohttp_client: AiohttpClient, data_dir: Path) -> None:
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    rules = {"mime": {"image/*": "photos/{subtype}"}, "default": "misc/{subtype}"}
    assert (await first.put("/categories", json=rules)).status == 200
    await first.close()
    second = await aiohttp_client(create_app(make_settings(data_dir)))
    upload = await second.post("/ingest", data=form([make_sample("gif", 1), make_sample("pdf", 1)]))
    categories = [r["category"] for r in (await upload.json())["results"]]
    assert categories == ["photos/gif", "misc/pdf"]


def test_remembered_answers_are_bounded_and_match_the_rules() -> None:
    rules = CategoryRules.parse({**DEFAULT_RULES, "extension": {".raw": "images/raw"}})
    fresh = CategoryRules.parse({**DEFAULT_RULES, "extension": {".raw": "images/raw"}})
    pairs = [(f"image/x-{i}", ".raw" if i % 2 else f".e{i}") for i in range(MEMO_ENTRIES + 500)]
    pairs += [("application/octet-stream", ".raw"), ("application/octet-stream", ".bin")]
    for _ in range(2):  # the second pass answers from the memo where it can
        for mime, extension in pairs:
            assert rules.categorize(mime, extension) == fresh._categorize(mime, extension)
    assert rules.categorize("application/octet-stream", ".raw") == "images/raw"
    assert len(rules._memo) == MEMO_ENTRIES


def test_a_swapped_rule_set_does_not_answer_from_the_old_memo(tmp_path: Path) -> None:
    categorizer = Categorizer.load(tmp_path)
    assert categorizer.categorize("image/png", ".png") == "images/png"
    categorizer.replace({**DEFAULT_RULES, "mime": {"image/png": "pictures/png"}})
    assert categorizer.categorize("image/png", ".png") == "pictures/png"


def test_readers_never_see_a_half_applied_update() -> None:
    """Writers flip between two rule sets; every reader's snapshot answers entirely from one of them."""
    set_a = {"mime": {"image/*": "a/{subtype}", "text/plain": "a/text"}, "default": "a/{subtype}"}
    set_b = {"mime": {"image/*": "b/{subtype}", "text/plain": "b/text"}, "default": "b/{subtype}"}
    categorizer = Categorizer(CategoryRules.parse(set_a))
    stop = threading.Event()
    torn: list[tuple[str, ...]] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            rules = categorizer.snapshot()
            answers = (
                rules.categorize("image/png", ""),
                rules.categorize("text/plain", ""),
                rules.categorize("video/mp4", ""),
            )
            if len({answer.split("/")[0] for answer in answers}) != 1:
                torn.append(answers)
            reads[0] += 1

    def writer() -> None:
        for i in range(300):
            categorizer.replace(set_a if i % 2 else set_b)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    writers = [threading.Thread(target=writer) for _ in range(2)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert torn == []
    assert reads[0] > 0


def test_rwlock_writer_excludes_readers_and_other_writers() -> None:
    lock = ReadWriteLock()
    state = {"readers": 0, "writers": 0}
    violations: list[str] = []
    guard = threading.Lock()

    def read() -> None:
        for _ in range(2000):
            with lock.read():
                with guard:
                    state["readers"] += 1
                    if state["writers"]:
                        violations.append("reader with writer")
                with guard:
                    state["readers"] -= 1

    def write() -> None:
        for _ in range(500):
            with lock.write():
                with guard:
                    state["writers"] += 1
                    if state["writers"] > 1 or state["readers"]:
                        violations.append("writer not alone")
                with guard:
                    state["writers"] -= 1

    threads = [threading.Thread(target=read) for _ in range(3)] + [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert violations == []


async def test_deeply_nested_rule_set_is_400_and_old_rules_stay(client: Client) -> None:
    before = await (await client.get("/categories")).json()
    body = b'{"mime": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await client.put("/categories", data=body, headers={"Content-Type": "application/json"})
    assert "nested" in await assert_error(response, 400, "invalid_rules")
    assert await (await client.get("/categories")).json() == before


@pytest.mark.parametrize(
    ("saved", "says"),
    [
        (b"{not json", "is not valid JSON"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
        (b'{"bogus": 1}', "are not valid: unknown keys: bogus"),
    ],
)
def test_saved_rules_edited_into_nonsense_stop_the_start_with_a_clear_message(
    tmp_path: Path, saved: bytes, says: str
) -> None:
    """A real `rhinobox serve`: one line naming the file and the fault, exit 1, no traceback, nothing served."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "categories.json").write_bytes(saved)
    result = run_cli("serve", env=server_env(data_dir))
    assert result.returncode == 1
    assert says in result.stderr
    assert str(data_dir / "categories.json") in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout.lower()
    assert (data_dir / "categories.json").read_bytes() == saved  # left for the operator to fix

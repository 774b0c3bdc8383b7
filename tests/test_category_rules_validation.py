"""A rule's category is checked like an upload hint: no `.` or `..` segments, no empty or absolute ones,
bounded lengths; refused with 400 `invalid_rules` on PUT and at load, the stored rules unchanged."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from rhinobox.errors import InsufficientStorage, InvalidRules
from rhinobox.ingest.categories import (
    DEFAULT_RULES,
    MAX_CATEGORY_SEGMENT_CHARS,
    MAX_CATEGORY_SEGMENTS,
    MAX_MIME_CHARS,
    Categorizer,
    CategoryRules,
)
from rhinobox.ingest.rules_store import RULES_FILENAME, FileRulesStore
from tests.helpers import Client, assert_error, form
from tests.samples import make_sample

LONG_SEGMENT = "x" * (MAX_CATEGORY_SEGMENT_CHARS + 1)
BAD_CATEGORIES = [
    "images/../{subtype}",
    "images/..",
    "../images/png",
    "images/.",
    "./png",
    "images/./png",
    "images//png",
    "/images/png",
    "images/png/",
    "images/.hidden",
    "images/png-",
    f"images/{LONG_SEGMENT}",
    "/".join(["a"] * (MAX_CATEGORY_SEGMENTS + 1)),
    "{subtype}/png",
    "images/{subtype}x",
    "images",
    "",
]


def rules_with(**changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(DEFAULT_RULES)), **changes}


@pytest.mark.parametrize("category", BAD_CATEGORIES)
@pytest.mark.parametrize("where", ["mime", "extension", "default"])
def test_bad_categories_are_refused_wherever_a_rule_names_one(category: str, where: str) -> None:
    document = {
        "mime": {"mime": {"image/*": category}},
        "extension": {"extension": {".png": category}},
        "default": {"default": category},
    }[where]
    with pytest.raises(InvalidRules) as raised:
        CategoryRules.parse(document)
    assert where in raised.value.message


@pytest.mark.parametrize(
    "document",
    [
        {"mime": {"image/" + "x" * MAX_MIME_CHARS: "images/x"}},
        {"generic": ["application/" + "x" * MAX_MIME_CHARS]},
        {"extension": {"." + "x" * 17: "documents/x"}},
    ],
)
def test_overlong_keys_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(InvalidRules):
        CategoryRules.parse(document)


def test_categories_at_the_limits_are_accepted() -> None:
    deepest = "/".join(["a"] * (MAX_CATEGORY_SEGMENTS - 1) + ["{subtype}"])
    longest = f"{'b' * MAX_CATEGORY_SEGMENT_CHARS}/{'c' * MAX_CATEGORY_SEGMENT_CHARS}"
    rules = CategoryRules.parse({"mime": {"image/*": deepest, "video/*": longest}, "default": "x_/+y.z"})
    assert rules.categorize("image/png", "") == "a/a/a/png"
    assert rules.categorize("video/mp4", "") == longest


@pytest.mark.parametrize("mime", ["image/..", "image/.", "image/-.-", "image/" + "y" * 300, "image/a..b.", "image/"])
def test_a_filled_subtype_is_a_valid_segment_too(mime: str) -> None:
    category = CategoryRules.parse({"mime": {"image/*": "images/{subtype}"}}).categorize(mime, "")
    CategoryRules.parse({"default": category})  # what ingest files under obeys the rules' own checks
    assert ".." not in category.split("/")


@pytest.mark.parametrize("category", BAD_CATEGORIES)
async def test_put_refuses_a_bad_category_and_the_stored_rules_stay(
    client: Client, data_dir: Path, category: str
) -> None:
    saved = rules_with(default="misc/{subtype}")
    assert (await client.put("/categories", json=saved)).status == 200
    on_disk = (data_dir / RULES_FILENAME).read_bytes()
    before = await (await client.get("/categories")).json()

    bad = rules_with(default="misc/{subtype}", mime={"image/*": category})
    message = await assert_error(await client.put("/categories", json=bad), 400, "invalid_rules")
    assert "mime['image/*']" in message

    assert await (await client.get("/categories")).json() == before
    assert (data_dir / RULES_FILENAME).read_bytes() == on_disk
    upload = await client.post("/ingest", data=form([make_sample("png", 1)]))
    assert (await upload.json())["results"][0]["category"] == "images/png"
    assert list((await (await client.get("/stats")).json())["categories"]) == ["images/png"]


async def test_put_refuses_an_overlong_mime_key(client: Client) -> None:
    before = await (await client.get("/categories")).json()
    bad = rules_with(mime={"image/" + "x" * MAX_MIME_CHARS: "images/x"})
    await assert_error(await client.put("/categories", json=bad), 400, "invalid_rules")
    assert await (await client.get("/categories")).json() == before


def test_saved_rules_with_a_dot_dot_segment_are_refused_at_load(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    saved = json.dumps(rules_with(mime={"image/*": "images/../{subtype}"})).encode()
    (data_dir / RULES_FILENAME).write_bytes(saved)
    with pytest.raises(InvalidRules) as raised:
        Categorizer.load(data_dir)
    assert str(data_dir / RULES_FILENAME) in raised.value.message
    assert "'..'" in raised.value.message
    assert (data_dir / RULES_FILENAME).read_bytes() == saved  # left for the operator to fix


async def test_a_full_disk_while_saving_rules_is_insufficient_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileRulesStore(tmp_path / RULES_FILENAME)
    await store.save({"default": "misc/{subtype}"})
    saved = store.path.read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(InsufficientStorage):
        await store.save({"default": "other/{subtype}"})
    assert store.path.read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == [RULES_FILENAME]  # no temp file left behind

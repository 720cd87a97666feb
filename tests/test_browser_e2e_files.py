"""Encrypted attachments in Chromium (docs/e2e.md, *Files*): files the Python reference client
encrypts and uploads show in the app decrypted (the image inline from an object URL, a file
with a download link under its real name, the same bytes); files attached in the app reach the
Python client, which decrypts the same bytes; the server keeps ciphertext under a generic name."""

from __future__ import annotations

import asyncio
import json
import os
import re

from bson import ObjectId
from playwright.async_api import Browser, expect

from tests.browser_helpers import close_all, new_person, tab, token_of
from tests.conftest import RunningServer
from tests.e2e_client import decrypt_file
from tests.files_helpers import download, png
from tests.test_browser_e2e import browser, me
from tests.test_browser_files import send_when_uploaded
from tests.test_conversations import join
from tests.test_e2e import E2eMember, incoming

# Each decrypted inline image of the open conversation: [its src scheme, naturalWidth].
DECRYPTED_IMAGES = """() => [...document.querySelectorAll('#message-list img.att-e2e-img')]
  .map((img) => [img.src.split(':')[0], img.complete ? img.naturalWidth : 0])"""

__all__ = ["browser"]  # the fixture, shared


async def test_files_go_encrypted_between_the_browser_and_python(
    browser: Browser, server: RunningServer
) -> None:
    bee = await new_person(browser, server, "beefiles", query="?transport=longpoll")
    bee_id = await me(server, bee.page)
    py = E2eMember(await join(server, "pyfiles"))
    await py.register()
    # Friends, so that the DM is in the list rather than among message requests.
    request = await py.member.api.post("/api/friends/requests", {"user_id": bee_id})
    bee_api = server.client(await token_of(bee.page))
    accepted = await bee_api.post(f"/api/friends/requests/{request.body['request']['id']}/accept")
    assert accepted.status == 200, accepted.body
    for _ in range(100):  # the app registers its device at sign-in
        if (await py.call("keys.user", user_id=bee_id)).expect()["devices"]:
            break
        await asyncio.sleep(0.1)
    cid = (await py.call("conversations.open_dm", user_id=bee_id, encrypted=True)).expect()[
        "conversation"
    ]["id"]

    # Python to the browser: a photo and a file.
    photo, notes = png(120, 80), os.urandom(30_000)
    files = [
        await py.upload_encrypted(photo, "holiday.png", "image/png"),
        await py.upload_encrypted(notes, "secret-notes.bin", "application/octet-stream"),
    ]
    await py.send(cid, "two files for you", files=files)
    await tab(bee, "Chats")
    rows = bee.page.locator("#conversation-list button.conv")
    await rows.filter(has=bee.page.locator(".lock")).click()
    await expect(bee.page.locator("#attach-button")).to_be_visible()  # files in encrypted chats
    await bee.page.wait_for_function(
        f"() => ({DECRYPTED_IMAGES})().some(([s, width]) => s === 'blob' && width === 120)"
    )
    chip = bee.page.locator("#message-list .att-file").filter(has_text="secret-notes.bin")
    async with bee.page.expect_download() as downloading:
        await chip.get_by_role("link", name=re.compile("^Download secret-notes.bin")).click()
    got = await downloading.value
    assert got.suggested_filename == "secret-notes.bin"
    saved = await got.path()
    assert await asyncio.to_thread(saved.read_bytes) == notes
    photo_chip = bee.page.locator("#message-list .att-file").filter(has_text="holiday.png")
    await expect(photo_chip).to_have_count(1)  # the real name, not the server's

    # The browser to Python: a photo and a file attached in the app.
    drawn, blob = png(90, 60), os.urandom(20_000)
    await bee.page.locator("#attach-input").set_input_files(
        [
            {"name": "from-bee.png", "mimeType": "image/png", "buffer": drawn},
            {"name": "bee-data.bin", "mimeType": "application/octet-stream", "buffer": blob},
        ]
    )
    await send_when_uploaded(bee.page, 2, "files from the browser")
    [message] = await incoming(py.member, None, 1)
    plaintext = json.loads(py.open(message))
    assert plaintext["body"] == "files from the browser"
    metas = {f["name"]: f for f in plaintext["files"]}
    assert metas.keys() == {"from-bee.png", "bee-data.bin"}
    assert metas["from-bee.png"]["type"] == "image/png" and metas["bee-data.bin"]["size"] == len(
        blob
    )
    for shown in message["attachments"]:
        assert shown["name"] == "encrypted" and shown["encrypted"] is True
        [meta] = [f for f in plaintext["files"] if f["id"] == shown["id"]]
        cipher = await download(py.member, shown["url"])
        original = drawn if meta["name"] == "from-bee.png" else blob
        assert decrypt_file(cipher.body, meta) == original
        stored = await server.store.db["uploads.files"].find_one({"_id": ObjectId(shown["id"])})
        assert stored is not None and stored["filename"] == "encrypted"
        # The names, not a substring that random hex (a hash, an id) may contain by chance.
        stored_metadata = json.dumps(stored["metadata"], default=str)
        assert "from-bee.png" not in stored_metadata and "bee-data.bin" not in stored_metadata
    # The sender's own bubble shows its photo decrypted too (the uploader reads the ciphertext).
    await bee.page.wait_for_function(
        f"() => ({DECRYPTED_IMAGES})().some(([s, width]) => s === 'blob' && width === 90)"
    )
    assert bee.errors == []
    await close_all(bee)

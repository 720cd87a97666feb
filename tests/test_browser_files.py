"""Attachments in the browser client, in a real Chromium against the real server: images sent
with the Attach button, by drag and drop and by pasting reach the other person live as
thumbnails whose box has its size before they load, and open full size in the viewer (keyboard
navigation, Escape); a file chip downloads the very bytes sent; a file too large is refused
before any upload; a cancelled upload sends nothing and leaves nothing stored."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import re
from collections.abc import AsyncIterator

import pytest
from PIL import Image
from playwright.async_api import Browser, Page, Request, Route, expect

from tests.browser_helpers import (
    Person,
    close_all,
    conversation_row,
    launch,
    live_person,
    open_conversation,
    open_dm_from_friends,
    tab,
    token_of,
    wait_live,
)
from tests.conftest import RunningServer, ServerFactory
from tests.files_helpers import png, sha256, webp
from tests.test_browser_a11y import AXE, Audit
from tests.test_files_input import nothing_stored

THUMB_BOX_PX = 280  # static/js/files.js: an inline image fits in this square
LIMIT = 512 * 1024  # the server's upload limit in the files scenario

# A DataTransfer holding files made from [base64, name, type] triples (drop and paste).
FILES_TRANSFER = """
(files) => {
  const transfer = new DataTransfer();
  for (const [data, name, type] of files) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name, { type }));
  }
  return transfer;
}
"""
PASTE = f"""
(files) => {{
  const transfer = ({FILES_TRANSFER})(files);
  const event = new ClipboardEvent(
    'paste', {{ clipboardData: transfer, bubbles: true, cancelable: true }}
  );
  document.getElementById('composer-input').dispatchEvent(event);
}}
"""
# Each inline image of the open conversation: [box width, box height, naturalWidth].
THUMB_BOXES = """
() => [...document.querySelectorAll('#message-list .att-thumb')].map((b) => {
  const r = b.getBoundingClientRect();
  return [Math.round(r.width), Math.round(r.height), b.querySelector('img').naturalWidth];
})
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


def fit(width: int, height: int) -> list[int]:
    """The inline box of an image (static/js/files.js fitInside)."""
    scale = min(1, THUMB_BOX_PX / width, THUMB_BOX_PX / height)
    return [round(width * scale), round(height * scale)]


def tall_png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (250, 200, 20)).save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def friends(server: RunningServer, alice: Person, bob: Person) -> None:
    """alice asks bob over the API, bob accepts: their pages hear it live."""
    alice_api = server.client(await token_of(alice.page))
    bob_api = server.client(await token_of(bob.page))
    bob_id = (await bob_api.get("/api/me")).body["user"]["id"]
    request = (await alice_api.post("/api/friends/requests", {"user_id": bob_id})).body["request"]
    assert (await bob_api.post(f"/api/friends/requests/{request['id']}/accept")).status == 200


async def send_when_uploaded(page: Page, count: int, body: str = "") -> None:
    """The composer's chips are all uploaded; type the body (if any) and press Enter."""
    await expect(page.locator("#attach-tray li")).to_have_count(count)
    await expect(page.locator('#attach-tray li[data-state="done"]')).to_have_count(count)
    box = page.get_by_label("Message", exact=True)
    await box.fill(body)
    await box.press("Enter")
    await expect(page.locator("#attach-tray")).to_be_hidden()


async def test_images_by_button_drop_and_paste_reach_the_other_and_open_in_the_viewer(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice")
    bob = await live_person(browser, server, "bob")
    for person in (alice, bob):  # axe-core (tests only), for the audits below
        await person.context.add_init_script(path=str(AXE))
        await person.page.reload()
        await wait_live(person)
    await friends(server, alice, bob)
    await expect(alice.page.locator("#friend-list li.person")).to_have_count(1)
    await open_dm_from_friends(alice, "bob")
    images = {
        "wide.png": (png(640, 480), "image/png", 640, 480),
        "dropped.webp": (webp(500, 300), "image/webp", 500, 300),
        "pasted.png": (tall_png(300, 600), "image/png", 300, 600),
    }

    # Bob's thumbnails are held until the test lets them go: their boxes are measured empty.
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        await release.wait()
        await route.continue_()

    await bob.context.route(re.compile(r".*/api/files/[^/?]+/thumbnail\?.*"), hold)

    # 1. The Attach button, with a body.
    async with alice.page.expect_file_chooser() as chooser:
        await alice.page.get_by_role("button", name="Attach files").click()
    data, mime, _, _ = images["wide.png"]
    await (await chooser.value).set_files({"name": "wide.png", "mimeType": mime, "buffer": data})
    await send_when_uploaded(alice.page, 1, "look at this")
    mine = alice.page.locator('#message-list li.msg[data-state="sent"]')
    await expect(mine.locator(".att-thumb")).to_have_count(1)
    await tab(bob, "Chats")
    await expect(conversation_row(bob.page, "alice").locator(".preview")).to_have_text(
        "look at this"
    )
    await open_conversation(bob, "alice")

    # 2. Dropped onto the conversation (the pane says it takes files while they hover).
    data, mime, _, _ = images["dropped.webp"]
    transfer = await alice.page.evaluate_handle(FILES_TRANSFER, [[b64(data), "dropped.webp", mime]])
    await alice.page.dispatch_event("#messages", "dragenter", {"dataTransfer": transfer})
    await expect(alice.page.locator("#chat-pane")).to_have_class(re.compile("drop-target"))
    await alice.page.dispatch_event("#messages", "drop", {"dataTransfer": transfer})
    await expect(alice.page.locator("#chat-pane")).not_to_have_class(re.compile("drop-target"))
    await send_when_uploaded(alice.page, 1)

    # 3. Pasted into the message box.
    data, mime, _, _ = images["pasted.png"]
    await alice.page.evaluate(PASTE, [[b64(data), "pasted.png", mime]])
    await expect(alice.page.locator('#attach-tray li[data-state="done"] img')).to_have_count(1)
    alice_audit = Audit(alice.page)
    await alice_audit.check("composer with an attachment")
    await send_when_uploaded(alice.page, 1)
    await expect(mine.locator(".att-thumb")).to_have_count(3)
    await expect(alice.page.locator("#message-list .bubble")).to_have_count(1)  # body only once

    # Bob has all three live: each box has the image's aspect ratio before any byte of it.
    thumbs = bob.page.locator("#message-list .att-thumb")
    await expect(thumbs).to_have_count(3)
    expected = [fit(w, h) for _, _, w, h in images.values()]
    before = await bob.page.evaluate(THUMB_BOXES)
    assert [box[:2] for box in before] == expected, before
    assert all(box[2] == 0 for box in before), before  # not loaded yet
    release.set()
    await bob.page.wait_for_function(
        "() => [...document.querySelectorAll('#message-list .att-thumb img')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    after = await bob.page.evaluate(THUMB_BOXES)
    assert [box[:2] for box in after] == expected, after  # no jump when they loaded
    await expect(conversation_row(bob.page, "alice").locator(".preview")).to_have_text("Photo")
    bob_audit = Audit(bob.page)
    await bob_audit.check("conversation with images")

    # The viewer: full size, labelled, arrows move, Escape closes, the focus comes back.
    viewer = bob.page.get_by_role("dialog", name="wide.png")
    await thumbs.first.click()
    await expect(viewer).to_be_visible()
    await expect(bob.page.locator("#viewer-close")).to_be_focused()
    await expect(bob.page.locator("#viewer-count")).to_have_text(re.compile(r"^Image 1 of 3"))
    full = "() => document.getElementById('viewer-image')?.naturalWidth"
    await bob.page.wait_for_function(f"{full} === 640")
    await bob.page.keyboard.press("ArrowRight")
    await expect(bob.page.locator("#viewer-title")).to_have_text("dropped.webp")
    await bob.page.wait_for_function(f"{full} === 500")
    await bob.page.keyboard.press("ArrowRight")
    await expect(bob.page.locator("#viewer-title")).to_have_text("pasted.png")
    await bob.page.wait_for_function(f"{full} === 300")
    await expect(bob.page.locator("#viewer-next")).to_be_disabled()
    await bob_audit.check("viewer")
    await bob.page.keyboard.press("ArrowLeft")
    await expect(bob.page.locator("#viewer-title")).to_have_text("dropped.webp")
    await bob.page.keyboard.press("Escape")
    await expect(bob.page.locator("#viewer")).to_be_hidden()
    await expect(thumbs.first).to_be_focused()
    alice_audit.assert_clean()
    bob_audit.assert_clean()
    assert not alice.errors and not bob.errors, alice.errors + bob.errors
    await close_all(alice, bob)


async def test_file_chips_download_too_large_refused_and_cancel_sends_nothing(
    browser: Browser, make_server: ServerFactory
) -> None:
    server = await make_server(max_upload_bytes=LIMIT)
    alice = await live_person(browser, server, "alice")
    bob = await live_person(browser, server, "bob")
    await friends(server, alice, bob)
    await expect(alice.page.locator("#friend-list li.person")).to_have_count(1)
    await open_dm_from_friends(alice, "bob")
    uploads: list[Request] = []
    alice.page.on("request", lambda r: uploads.append(r) if "/api/uploads" in r.url else None)
    picker = alice.page.locator("#attach-input")

    # Cancel half way (the upload slowed down to 64 KiB/s), with the send already waiting for it.
    cdp = await alice.context.new_cdp_session(alice.page)
    await cdp.send("Network.enable")
    slow = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 65536}
    await cdp.send("Network.emulateNetworkConditions", slow)
    slow_file = os.urandom(LIMIT - 1)
    await picker.set_input_files(
        {"name": "slow.bin", "mimeType": "application/octet-stream", "buffer": slow_file}
    )
    progress = alice.page.locator("#attach-tray progress")
    await expect(progress).to_have_count(1)
    await alice.page.wait_for_function(
        "() => document.querySelector('#attach-tray progress')?.value > 0"
    )
    await alice.page.get_by_label("Message", exact=True).press("Enter")
    await expect(alice.page.locator("#attach-status")).to_have_text(re.compile("as soon as"))
    async with alice.page.expect_event("requestfailed") as aborted:
        await alice.page.get_by_role("button", name="Cancel upload of slow.bin").click()
    assert "/api/uploads" in (await aborted.value).url
    await expect(alice.page.locator("#attach-tray")).to_be_hidden()
    await expect(alice.page.locator("#attach-status")).to_have_text("")
    await cdp.send("Network.emulateNetworkConditions", {**slow, "uploadThroughput": -1})
    await nothing_stored(server)
    assert len(uploads) == 1
    await expect(alice.page.locator("#message-list li.msg")).to_have_count(0)

    # Too large by its size: a toast, and no request at all.
    await picker.set_input_files(
        {"name": "huge.bin", "mimeType": "application/octet-stream", "buffer": b"x" * (LIMIT + 1)}
    )
    await expect(alice.page.locator(".toast.error")).to_contain_text(
        "huge.bin is too large: the limit is 512 KB."
    )
    await expect(alice.page.locator("#attach-tray")).to_be_hidden()
    assert len(uploads) == 1

    # What only the server can tell (an image that does not decode): its answer, in a toast.
    await picker.set_input_files(
        {"name": "broken.png", "mimeType": "image/png", "buffer": png()[:1000]}
    )
    broken = alice.page.locator(".toast.error").filter(has_text="broken.png")
    await expect(broken).to_contain_text(re.compile("was not uploaded: .*truncated"))
    await expect(alice.page.locator("#attach-tray")).to_be_hidden()
    assert len(uploads) == 2

    # Two files in one message: bob sees their chips live and downloads the same bytes.
    notes = os.urandom(100_000)
    report = b"%PDF-1.4\n" + os.urandom(50_000)
    await picker.set_input_files(
        [
            {"name": "notes.bin", "mimeType": "application/octet-stream", "buffer": notes},
            {"name": "report.pdf", "mimeType": "application/pdf", "buffer": report},
        ]
    )
    await send_when_uploaded(alice.page, 2, "")
    await tab(bob, "Chats")
    await expect(conversation_row(bob.page, "alice").locator(".preview")).to_have_text("2 files")
    await open_conversation(bob, "alice")
    chip = bob.page.locator("#message-list .att-file").filter(has_text="notes.bin")
    await expect(chip.locator(".att-size")).to_have_text("98 KB")
    async with bob.page.expect_download() as downloading:
        await chip.get_by_role("link", name=re.compile("^Download notes.bin")).click()
    download = await downloading.value
    assert download.suggested_filename == "notes.bin"
    saved = await download.path()
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == sha256(notes)
    assert not alice.errors and not bob.errors, alice.errors + bob.errors
    await close_all(alice, bob)

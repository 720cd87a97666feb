"""Who may read a file: its uploader, and the members of the conversation its message is in; a
removed member only what it could already see; nobody a block stands between it and the
uploader; and signed URLs that are the reader's own and unexpired. Everyone else gets 404
and not a byte."""

from __future__ import annotations

import time

from bson import ObjectId

from tests.conftest import RunningServer
from tests.files_helpers import Download, download, pdf, png, uploaded
from tests.test_conversations import Member, join, open_dm, send

SECRET_BYTES = pdf()


def refused(got: Download) -> None:
    assert got.status == 404, got.status
    assert SECRET_BYTES not in got.body and b"%PDF" not in got.body
    assert b'"not_found"' in got.body


async def dm_with_file(server: RunningServer) -> tuple[Member, Member, dict[str, str]]:
    alice = await join(server, "fa", "rest")
    bob = await join(server, "fb", "rest")
    conv = await open_dm(alice, bob)
    up = await uploaded(alice, SECRET_BYTES, "secret.pdf")
    await send(alice, conv["id"], "", attachments=[up["id"]])
    att = (await bob.event("message.new"))["message"]["attachments"][0]
    return alice, bob, att


async def test_strangers_forged_ids_and_unattached_uploads(server: RunningServer) -> None:
    alice, bob, att = await dm_with_file(server)
    mallory = await join(server, "fm", "rest", online=False)
    file_path = f"/api/files/{att['id']}"
    refused(await download(mallory, file_path, auth=True))
    refused(await download(mallory, file_path + "/thumbnail", auth=True))
    refused(await download(mallory, f"/api/files/{ObjectId()}", auth=True))
    refused(await download(mallory, "/api/files/not-an-id", auth=True))
    # An upload nobody attached: its uploader reads it, nobody else, even a friend of it.
    loose = await uploaded(alice, SECRET_BYTES, "draft.pdf")
    assert (await download(alice, loose["url"])).body == SECRET_BYTES
    refused(await download(bob, f"/api/files/{loose['id']}", auth=True))
    # Without any credential: 401, as every API path.
    anonymous = await download(None, file_path, base=server.base_url)
    assert anonymous.status == 401 and SECRET_BYTES not in anonymous.body


async def test_signed_urls_are_the_readers_own_and_expire(server: RunningServer) -> None:
    alice, bob, att = await dm_with_file(server)
    mallory = await join(server, "fm", "rest", online=False)
    url = att["url"]
    assert (await download(None, url, base=server.base_url)).body == SECRET_BYTES  # as <img>
    # Bob's URL with Mallory's own token: someone else's URL.
    refused(await download(mallory, url, auth=True))
    # Altered: another user, another expiry, another file, the file's URL for its thumbnail.
    refused(await download(None, url.replace(f"u={bob.id}", f"u={mallory.id}"),
                           base=server.base_url))  # fmt: skip
    exp = int(url.split("exp=")[1].split("&")[0])
    refused(await download(None, url.replace(f"exp={exp}", f"exp={exp + 3600}"),
                           base=server.base_url))  # fmt: skip
    refused(await download(None, url.replace("sig=", "sig=x"), base=server.base_url))
    # A signature that is not ASCII (found by schemathesis: a 500, hmac refused to compare).
    refused(await download(None, url.replace("sig=", "sig=%C3%A9"), base=server.base_url))
    other = await uploaded(alice, png(), "other.png")
    refused(await download(None, url.replace(att["id"], other["id"]), base=server.base_url))
    # Expired: signed correctly, for a moment past.
    service = server.service
    past = int(time.time()) - 1
    sig = service._sign(att["id"], "file", bob.id, past)
    expired = f"/api/files/{att['id']}?u={bob.id}&exp={past}&sig={sig}"
    refused(await download(None, expired, base=server.base_url))


async def test_a_removed_member_keeps_only_what_it_could_see(server: RunningServer) -> None:
    alice = await join(server, "ga", "rest")
    bob = await join(server, "gb", "rest")
    carol = await join(server, "gc", "rest")
    group = (await alice.call("groups.create", name="Team", member_ids=[bob.id, carol.id])).expect(
        201
    )["conversation"]
    before = await uploaded(alice, SECRET_BYTES, "before.pdf")
    await send(alice, group["id"], "", attachments=[before["id"]])
    seen = (await carol.event("message.new"))["message"]["attachments"][0]
    (
        await alice.call("groups.remove_member", conversation_id=group["id"], user_id=carol.id)
    ).expect()
    after = await uploaded(alice, SECRET_BYTES, "after.pdf")
    await send(alice, group["id"], "", attachments=[after["id"]])
    assert (await download(carol, seen["url"])).body == SECRET_BYTES
    assert (await download(carol, f"/api/files/{before['id']}", auth=True)).status == 200
    refused(await download(carol, f"/api/files/{after['id']}", auth=True))
    assert (await download(bob, f"/api/files/{after['id']}", auth=True)).status == 200


async def test_a_block_closes_the_files_of_the_other_side(server: RunningServer) -> None:
    alice, bob, att = await dm_with_file(server)
    path = f"/api/files/{att['id']}"
    assert (await download(bob, path, auth=True)).status == 200
    (await alice.call("blocks.add", user_id=bob.id)).expect()
    refused(await download(bob, att["url"]))  # the URL it was given before
    refused(await download(bob, path, auth=True))
    assert (await download(alice, path, auth=True)).status == 200  # its own upload
    (await alice.call("blocks.remove", user_id=bob.id)).expect()
    assert (await download(bob, path, auth=True)).body == SECRET_BYTES

"""Encrypted attachments (docs/e2e.md, *Files*): the client encrypts a file with a key of its
own, uploads the ciphertext, and sends the key, name, type and size inside the encrypted
message; the server keeps ciphertext under a generic name and still lets members only read it."""

from __future__ import annotations

import json

from tests.conftest import RunningServer
from tests.e2e_client import decrypt_file
from tests.files_helpers import download, pdf, png, upload, uploaded
from tests.test_conversations import join
from tests.test_e2e import e2e_pair


async def test_a_file_goes_encrypted_and_only_members_read_its_ciphertext(
    server: RunningServer,
) -> None:
    alice, bob, dm = await e2e_pair(server)
    photo, document = png(64, 48), pdf()
    files = [
        await alice.upload_encrypted(photo, "holiday.png", "image/png"),
        await alice.upload_encrypted(document, "contract.pdf", "application/pdf"),
    ]
    sent = await alice.send(dm, "two files", files=files)
    assert [a["id"] for a in sent["attachments"]] == [f["id"] for f in files]
    message = (await bob.member.event("message.new"))["message"]
    plaintext = json.loads(bob.open(message))
    assert plaintext["body"] == "two files"
    originals = (photo, document)
    for shown, meta, original in zip(
        message["attachments"], plaintext["files"], originals, strict=True
    ):
        # The server shows nothing that tells the file: a generic name and type, no thumbnail.
        assert shown["name"] == "encrypted" and shown["content_type"] == "application/octet-stream"
        assert shown["kind"] == "file" and shown["encrypted"] is True
        assert "thumbnail_url" not in shown and "width" not in shown
        assert shown["size"] == len(original) + 16  # the GCM tag
        got = await download(bob.member, shown["url"])
        assert got.status == 200 and got.headers["Content-Type"] == "application/octet-stream"
        assert 'filename="encrypted"' in got.headers["Content-Disposition"]
        assert meta["id"] == shown["id"]
        assert decrypt_file(got.body, meta) == original
        assert meta["name"] in ("holiday.png", "contract.pdf") and meta["size"] == len(original)
    # Access stays the members': a stranger gets 404 with the file's path and own token.
    stranger = await join(server, "fs")
    path = message["attachments"][0]["url"].split("?")[0]
    assert (await download(stranger, path, auth=True)).status == 404
    assert (await download(bob.member, path, auth=True)).status == 200


async def test_plain_and_encrypted_uploads_stay_in_their_own_conversations(
    server: RunningServer,
) -> None:
    alice, bob, dm = await e2e_pair(server, "rest")
    plain_dm = (await alice.call("conversations.open_dm", user_id=bob.id)).expect()
    plain_id = plain_dm["conversation"]["id"]
    secret = await alice.upload_encrypted(b"sealed bytes", "a.txt", "text/plain")
    reply = await alice.call(
        "messages.send", conversation_id=plain_id, body="hi", attachments=[secret["id"]]
    )
    assert reply.status == 400 and reply.code == "validation_failed", reply
    assert (
        reply.field == "attachments"
        and "encrypted conversation only" in reply.data["error"]["message"]
    )
    clear = await uploaded(alice.member, pdf(), "clear.pdf")
    await alice.claim(bob.peer_id)
    envelope = alice.device.encrypt(bob.peer_id, b'{"body": "x"}')
    reply = await alice.call(
        "messages.send", conversation_id=dm, envelopes=[envelope], attachments=[clear["id"]]
    )
    assert reply.status == 400 and reply.field == "attachments", reply
    assert "uploaded encrypted" in reply.data["error"]["message"]
    # Refused sends leave both uploads free: each goes where it belongs.
    sent = await alice.call(
        "messages.send", conversation_id=plain_id, body="hi", attachments=[clear["id"]]
    )
    assert sent.status == 201, sent
    assert (await alice.send(dm, "sealed", files=[secret]))["attachments"][0]["encrypted"]
    bad = await upload(alice.member, b"x" * 20, "a.bin")
    assert bad.status == 201  # a plain upload as before
    flag = await alice.member.api.request(
        "POST", "/api/uploads?encrypted=yes", raw_body=b"x" * 20,
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert flag.status == 400 and flag.body["error"]["field"] == "encrypted", flag.body

"""Attachments: uploads streamed into GridFS, their attachment to a message, who may read them,
signed URLs, and the deletion of uploads never attached. The rules on bytes and names are in
chat/files.py, the storage in chat/store/files.py, the HTTP side in handlers/files.py.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import hmac
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import IO, Any

from chat.commands import Principal
from chat.conversations import ConversationCommands
from chat.errors import DatabaseUnavailable, NotFound, RateLimited, TooLarge, ValidationFailed
from chat.files import SNIFF_BYTES, BadFile, CleanImage, Kind, clean_image, safe_name, sniff
from chat.limits import AttemptLimiter, UserSlots
from chat.models import utcnow
from chat.store.files import CHUNK_BYTES, ORPHAN_AGE, FileWriter, StoredFile
from chat.store.messages import Message
from chat.tasks import cancel_and_wait

log = logging.getLogger(__name__)

MAX_ATTACHMENTS = 10  # per message
URL_TTL_SECS = 6 * 3600  # a signed URL works this long at least...
URL_ROUND_SECS = 3600  # ...and its expiry is rounded up to this, so that the URL of a file
#                        stays the same across renders for a while (the browser's cache hits)
UPLOADS_AT_ONCE_PER_USER = 4  # concurrent uploads of one user
IMAGE_WORKERS = 2  # threads decoding images: a burst of uploads cannot take every core
SPOOL_BUFFER_BYTES = CHUNK_BYTES  # the body goes to GridFS or a temporary file this many at once
# A process's first sweep looks this far back for chunks an unfinished upload left behind.
HEADLESS_LOOKBACK = timedelta(days=7)
ORPHAN_SWEEP_SECS = 3600.0  # how often uploads never attached are looked for
# A file claimed this recently by a send whose message is not stored yet is left to that send.
CLAIM_SETTLE = timedelta(minutes=10)
# What the server knows of an encrypted upload (docs/e2e.md): its real name, type and size
# travel inside the encrypted message, with the key.
ENCRYPTED_NAME = "encrypted"
ENCRYPTED_TYPE = "application/octet-stream"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Upload:
    """One upload as it arrives: sniffed from its first bytes, then either streamed into
    GridFS (files) or spooled to a private temporary file to be decoded and cleaned (images);
    never whole in memory. Nothing is kept unless finish() succeeds."""

    def __init__(
        self,
        service: FileCommands,
        user_id: str,
        name: str | None,
        limit: int,
        encrypted: bool = False,
    ) -> None:
        self._service = service
        self._encrypted = encrypted
        self._user_id = user_id
        self._raw_name = name
        self._limit = limit
        self.size = 0
        self._head = bytearray()
        self._kind: Kind | None = None
        self._content_type = ""
        self._format: str | None = None
        self._name = ""
        self._writer: FileWriter | None = None
        self._spool: IO[bytes] | None = None
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._lock = asyncio.Lock()  # writes, finish and abort one after the other
        self._done = False
        self._thumbnail_id: str | None = None

    async def write(self, data: bytes) -> None:
        """Take the next piece of the body; TooLarge past the limit (nothing is kept then)."""
        async with self._lock:
            if self._done:
                return
            self.size += len(data)
            if self.size > self._limit:
                await self._discard()
                raise TooLarge(f"The file is larger than {self._service.max_upload_text}.")
            if self._kind is None:
                self._head += data
                if len(self._head) < SNIFF_BYTES:
                    return
                data, self._head = bytes(self._head), bytearray()
                self._start(data[:SNIFF_BYTES])
            await self._take(data)

    def _start(self, head: bytes) -> None:
        if self._encrypted:  # ciphertext: nothing to sniff, and no name, no thumbnail
            self._kind, self._content_type, self._format = "file", ENCRYPTED_TYPE, None
            self._name = ENCRYPTED_NAME
        else:
            self._kind, self._content_type, self._format = sniff(head)
            self._name = safe_name(self._raw_name, self._kind)
        if self._format is None:  # a file: straight into GridFS
            self._writer = self._service.store.files.open_writer(self._name)
        else:
            self._spool = tempfile.TemporaryFile(prefix="chat-upload-")  # noqa: SIM115

    async def _take(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= SPOOL_BUFFER_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        """What is buffered goes to GridFS (a file) or to the temporary file (an image)."""
        if not self._buffer:
            return
        data, self._buffer = bytes(self._buffer), bytearray()
        if self._writer is not None:
            await self._store_block(data)
        elif self._spool is not None:
            await self._service.in_executor(self._spool.write, data)

    async def _store_block(self, data: bytes) -> None:
        """Hash a block off the loop while it is written: hashing 25 MiB on the loop costs
        other users' messages their latency (bench.uploads)."""
        assert self._writer is not None
        hashing = asyncio.get_running_loop().run_in_executor(None, self._hash.update, data)
        await asyncio.gather(hashing, self._writer.write(data))

    async def finish(self) -> dict[str, Any]:
        """Store what arrived: the upload as the contract shows it (201's body)."""
        async with self._lock:
            if self._done:
                raise ValidationFailed("The upload was cancelled.", field="file")
            try:
                return await self._finish()
            except BaseException:
                await self._discard()
                raise
            finally:
                self._done = True

    async def _finish(self) -> dict[str, Any]:
        if self.size == 0:
            raise BadFile("The file is empty.")
        if self._kind is None:  # shorter than the sniffed head
            head = bytes(self._head)
            self._head = bytearray()
            self._start(head)
            await self._take(head)
        await self._flush()
        image: CleanImage | None = None
        if self._spool is not None:
            image = await self._clean_and_store()
        assert self._writer is not None and self._kind is not None
        metadata: dict[str, Any] = {
            "uploader": self._user_id,
            "kind": self._kind,
            "content_type": image.content_type if image else self._content_type,
            "sha256": self._hash.hexdigest(),
            "claim": None,
            "conversation_id": None,
            "attached": False,
        }
        if self._encrypted:
            metadata["encrypted"] = True
        if image is not None:
            metadata.update(width=image.width, height=image.height, frames=image.frames)
            self._thumbnail_id = await self._service.store.files.put(
                image.thumbnail,
                self._name + ".thumbnail.webp",
                {"thumbnail_of": self._writer.id, "content_type": "image/webp",
                 "sha256": hashlib.sha256(image.thumbnail).hexdigest(),
                 "width": image.thumbnail_width, "height": image.thumbnail_height},
            )  # fmt: skip
            metadata["thumbnail_id"] = self._thumbnail_id
        await self._writer.close(metadata)
        stored = await self._service.store.files.get(self._writer.id)
        if stored is None:
            raise DatabaseUnavailable("The upload is not confirmed yet; try again.")
        self._writer = None  # kept: nothing to discard any more
        self._thumbnail_id = None
        self._close_spool()
        return self._service.upload_reply(stored, self._user_id)

    async def _clean_and_store(self) -> CleanImage:
        """Decode and clean the spooled image off the loop, then stream the result (or, for a
        GIF, the original) into GridFS."""
        assert self._spool is not None and self._format is not None
        await self._flush()
        out = tempfile.TemporaryFile(prefix="chat-clean-")  # noqa: SIM115
        try:
            image: CleanImage = await self._service.in_executor(
                clean_image, self._spool, self._format, out
            )
            source = out if image.rewritten else self._spool
            await self._service.in_executor(source.seek, 0)
            self._writer = self._service.store.files.open_writer(self._name)
            self.size = 0
            while data := await self._service.in_executor(source.read, CHUNK_BYTES):
                self.size += len(data)
                await self._store_block(data)
            return image
        finally:
            out.close()

    async def abort(self) -> None:
        """The client went away, or the upload was refused: keep nothing."""
        async with self._lock:
            self._done = True
            await self._discard()

    async def _discard(self) -> None:
        self._done = True
        self._buffer = bytearray()
        self._close_spool()
        writer, self._writer = self._writer, None
        thumbnail, self._thumbnail_id = self._thumbnail_id, None
        with contextlib.suppress(DatabaseUnavailable):
            if writer is not None:
                await writer.abort()
            if thumbnail is not None:
                await self._service.store.files.delete([thumbnail])

    def _close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def check_encryption(files: Sequence[StoredFile], encrypted: bool) -> None:
    """An encrypted conversation's message takes encrypted uploads only (a plain one would be
    plaintext on the server), and a plain conversation's none (nobody there has the key)."""
    if encrypted and not all(f.encrypted for f in files):
        raise ValidationFailed(
            "An encrypted conversation takes only files uploaded encrypted "
            "(POST /api/uploads?encrypted=true).",
            field="attachments",
        )
    if not encrypted and any(f.encrypted for f in files):
        raise ValidationFailed(
            "An encrypted upload goes in an encrypted conversation only: upload the file "
            "again, unencrypted.",
            field="attachments",
        )


class FileCommands(ConversationCommands):
    """Uploads, attachments, access to files and their signed URLs."""

    def init_files(self) -> None:
        """The upload limits, the image workers and the orphans' sweep (needs a loop)."""
        settings = self.settings
        self.upload_limiter = AttemptLimiter(settings.uploads_per_user, settings.upload_window_secs)
        self.upload_slots = UserSlots(UPLOADS_AT_ONCE_PER_USER)
        self._image_pool = concurrent.futures.ThreadPoolExecutor(
            IMAGE_WORKERS, thread_name_prefix="chat-images"
        )
        self._headless_swept: datetime | None = None  # headless chunks before it are gone
        self._orphan_sweeper = asyncio.get_running_loop().create_task(self._sweep_orphans())

    @property
    def max_upload_text(self) -> str:
        mib = self.settings.max_upload_bytes / 2**20
        return f"{mib:g} MiB"

    async def in_executor(self, fn: Any, *args: Any) -> Any:
        """Run blocking work (image decoding, temporary files) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._image_pool, fn, *args)

    # -- uploads ----------------------------------------------------------------------------

    def begin_upload(
        self,
        principal: Principal,
        name: str | None,
        declared_size: int | None,
        encrypted: bool = False,
    ) -> Upload:
        """An upload for the caller: TooLarge when it says it is over the limit, RateLimited
        past the per-user rate or with too many at once. The caller must finish() or abort()
        it, then end_upload(). encrypted: ciphertext for an encrypted conversation, stored
        as ENCRYPTED_NAME and ENCRYPTED_TYPE, never sniffed nor decoded."""
        limit = self.settings.max_upload_bytes
        if declared_size is not None and declared_size > limit:
            raise TooLarge(f"The file is larger than {self.max_upload_text}.")
        user_id = principal.user_id
        wait = self.upload_limiter.take_now(user_id)
        if wait:
            raise RateLimited("Too many uploads; wait a little.", retry_after_secs=wait)
        if not self.upload_slots.acquire(user_id):
            self.upload_limiter.refund_now(user_id)
            raise RateLimited("Too many uploads at once; wait for one to finish.",
                              retry_after_secs=1)  # fmt: skip
        return Upload(self, user_id, name, limit, encrypted)

    def end_upload(self, principal: Principal) -> None:
        """The upload begun by begin_upload is over (finished or aborted)."""
        self.upload_slots.release(principal.user_id)

    def upload_reply(self, stored: StoredFile, user_id: str) -> dict[str, Any]:
        """The upload as the contract shows it, with URLs signed for the uploader."""
        shown = self.attachment_for(stored.attachment(), user_id)
        shown["sha256"] = stored.sha256
        return {"upload": shown}

    # -- attaching --------------------------------------------------------------------------

    async def claim_attachments(
        self,
        user_id: str,
        conversation_id: str,
        key: str,
        file_ids: Sequence[str],
        encrypted: bool = False,
    ) -> tuple[dict[str, Any], ...]:
        """Reserve the sender's own unattached uploads for the message `key`; what the message
        stores of each, in the order given. ValidationFailed (field attachments) when one is
        not the sender's, unknown, attached to another message, or uploaded encrypted when
        the conversation is not (or the other way round: `encrypted` is the conversation's)."""
        if not file_ids:
            return ()
        files = self.store.files
        found = await files.get_many(file_ids)
        if any(
            f not in found or found[f].uploader_id != user_id or not found[f].sha256
            for f in file_ids
        ):
            raise ValidationFailed("Attach only files you uploaded.", field="attachments")
        check_encryption([found[f] for f in file_ids], encrypted)
        held = await files.claim(file_ids, user_id, key, conversation_id)
        if held != len(file_ids):
            with contextlib.suppress(DatabaseUnavailable):
                await files.release(file_ids, user_id, key)
            raise ValidationFailed(
                "A file is already attached to another message; upload it again.",
                field="attachments",
            )
        return tuple(found[f].attachment() for f in file_ids)

    async def release_attachments(self, user_id: str, key: str, file_ids: Sequence[str]) -> None:
        """The message `key` was not stored: its uploads may go with another one (unless an
        earlier attempt under the same key stored it)."""
        with contextlib.suppress(DatabaseUnavailable):
            if await self.store.conversations.by_client_msg_id(user_id, key) is None:
                await self.store.files.release(file_ids, user_id, key)

    async def attachments_stored(self, message: Message) -> None:
        """The message is stored: its files are attached to it (one write; until it lands,
        readers find the message by the files' claim)."""
        with contextlib.suppress(DatabaseUnavailable):
            ids = [a["id"] for a in message.attachments]
            await self.store.files.confirm(ids, message.id, message.seq)

    # -- showing ----------------------------------------------------------------------------

    def present(self, message: Message, user_id: str) -> dict[str, Any]:
        """The message as this user is shown it: attachments with URLs signed for it."""
        shown = message.to_dict()
        if message.attachments:
            shown["attachments"] = [self.attachment_for(a, user_id) for a in message.attachments]
        return shown

    def present_for_export(self, message: Message) -> dict[str, Any]:
        """The message in an export: attachments' metadata and download paths (which need
        the reader's token), never the bytes, never a signature that would expire."""
        shown = message.to_dict()
        if message.attachments:
            shown["attachments"] = [self.attachment_for(a, None) for a in message.attachments]
        return shown

    def attachment_for(self, stored: dict[str, Any], user_id: str | None) -> dict[str, Any]:
        """One attachment with its url (and thumbnail_url), signed for user_id when given."""
        shown = {k: v for k, v in stored.items() if k != "thumbnail"}
        shown["url"] = self.file_url(stored["id"], "file", user_id)
        if stored.get("thumbnail"):
            shown["thumbnail_url"] = self.file_url(stored["id"], "thumbnail", user_id)
        return shown

    def file_url(self, file_id: str, variant: str, user_id: str | None) -> str:
        """/api/files/{id}[/thumbnail], signed for user_id (expiring) when given."""
        path = f"/api/files/{file_id}" + ("/thumbnail" if variant == "thumbnail" else "")
        if user_id is None:
            return path
        expires = math.ceil((time.time() + URL_TTL_SECS) / URL_ROUND_SECS) * URL_ROUND_SECS
        signature = self._sign(file_id, variant, user_id, expires)
        return f"{path}?u={user_id}&exp={expires}&sig={signature}"

    def _sign(self, file_id: str, variant: str, user_id: str, expires: int) -> str:
        message = f"file:{file_id}:{variant}:{user_id}:{expires}".encode()
        return _b64(hmac.new(self.settings.secret.encode(), message, hashlib.sha256).digest())

    def signed_reader(
        self, file_id: str, variant: str, user_id: str, expires: str, signature: str
    ) -> str:
        """The user a signed URL was made for; NotFound when it is forged, altered or
        expired (the same answer as for a file that does not exist)."""
        try:
            when = int(expires)
        except ValueError:
            raise NotFound("No such file.") from None
        good = self._sign(file_id, variant, user_id, when)
        # As bytes: compare_digest refuses str with characters outside ASCII (a TypeError).
        if not hmac.compare_digest(good.encode(), signature.encode()) or when < time.time():
            raise NotFound("No such file.")
        return user_id

    # -- reading ----------------------------------------------------------------------------

    async def access_file(self, user_id: str, file_id: str) -> StoredFile:
        """The file if user_id may read it: its uploader, or a member of the conversation of
        its message (a removed member: only if the message is one it could read), and no
        block between it and the uploader. NotFound for everyone else."""
        stored = await self.store.files.get(file_id)
        if stored is None or not stored.sha256 or stored.kind not in ("image", "gif", "file"):
            raise NotFound("No such file.")
        if stored.uploader_id == user_id:
            return stored
        seq, conversation_id = stored.seq, stored.conversation_id
        if not stored.attached or seq is None:
            message = None
            if stored.claim is not None:
                message = await self.store.conversations.by_client_msg_id(
                    stored.uploader_id, stored.claim
                )
            if message is None or message.conversation_id != conversation_id:
                raise NotFound("No such file.")
            seq = message.seq
        assert conversation_id is not None
        _, max_seq = await self.access_conversation(
            Principal(user_id, ""), conversation_id, write=False
        )
        if seq > max_seq or await self.is_blocked_between(user_id, stored.uploader_id):
            raise NotFound("No such file.")
        return stored

    # -- orphans ----------------------------------------------------------------------------

    async def delete_orphans(self, older_than: timedelta = ORPHAN_AGE) -> int:
        """Delete the uploads older than that never attached to a stored message, and the chunks
        of uploads the server stopped in the middle of; how many files."""
        found = []
        settling = utcnow() - CLAIM_SETTLE
        for stored in await self.store.files.unattached_before(utcnow() - older_than):
            message = None
            if stored.claim is not None:
                message = await self.store.conversations.by_client_msg_id(
                    stored.uploader_id, stored.claim
                )
            if message is not None and message.conversation_id == stored.conversation_id:
                await self.store.files.confirm([stored.id], message.id, message.seq)
            elif stored.claimed_at is None or stored.claimed_at < settling:
                found.append(stored)
        deleted = await self.store.files.take_for_sweep(found)  # a send may have claimed some
        if deleted:
            await self.store.files.delete(deleted)
        cutoff = utcnow() - older_than
        since = self._headless_swept or cutoff - HEADLESS_LOOKBACK
        headless = await self.store.files.delete_headless_chunks(since, cutoff)
        self._headless_swept = cutoff
        return len(deleted) + headless

    async def delete_message_files(self, message: Message) -> None:
        """Delete the files of a deleted message (for the message lifecycle)."""
        await self.store.files.delete([a["id"] for a in message.attachments])

    async def _sweep_orphans(self) -> None:
        while True:
            await asyncio.sleep(ORPHAN_SWEEP_SECS)
            try:
                count = await self.delete_orphans()
                if count:
                    log.info("deleted %d uploads never attached", count)
            except DatabaseUnavailable:
                log.warning("the database is unavailable; unattached uploads are kept for now")

    async def close_files(self) -> None:
        """Stop the sweep and the image workers."""
        await cancel_and_wait(self._orphan_sweeper)
        self._image_pool.shutdown(wait=False, cancel_futures=True)

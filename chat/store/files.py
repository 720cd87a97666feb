"""Attachments in GridFS (bucket `uploads`): the bytes in chunks, what we know of each file in
its `metadata`, and thumbnails as GridFS files of their own.

Metadata of an upload: uploader, name, kind, content_type, size, sha256, width/height (images),
thumbnail_id, and its attachment: `claim` (the sender's client_msg_id of the message it goes
with, set before that message is stored), conversation_id, then `attached` with message_id and
seq once the message is stored. Uploads never attached are deleted after a day
(delete_orphans); a claim whose message never got stored counts as never attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from chat.models import utcnow
from chat.store.base import Collections, InFlight, db_errors, translated

BUCKET = "uploads"
# Chunk inserts in flight at once, all uploads of the process together: however many files
# arrive, the database has a message's insert to do between two chunks (bench.uploads: the
# chat's p99 while 4 clients upload).
CHUNK_WRITES_AT_ONCE = 1
CHUNK_BYTES = 1024 * 1024  # GridFS chunk: one insert per MiB (the default 255 KiB is 4 per MiB)
ORPHANS_PER_SWEEP = 1000  # files deleted by one sweep at most (the next one goes on)
ORPHAN_AGE = timedelta(hours=24)  # an upload never attached within this is deleted
SWEPT = "\x00swept"  # the claim of a file the sweep is deleting (no client_msg_id is this)


@dataclasses.dataclass(frozen=True)
class StoredFile:
    """An upload (or a thumbnail) as stored: its GridFS document's fields and metadata."""

    id: str
    name: str
    size: int
    uploader_id: str
    kind: str
    content_type: str
    sha256: str
    uploaded_at: datetime
    width: int | None = None
    height: int | None = None
    thumbnail_id: str | None = None
    claim: str | None = None  # the client_msg_id of the message it was claimed for
    claimed_at: datetime | None = None
    conversation_id: str | None = None
    attached: bool = False  # its message is stored
    message_id: str | None = None
    seq: int | None = None
    encrypted: bool = False  # ciphertext of an encrypted conversation's file (docs/e2e.md)

    def attachment(self) -> dict[str, Any]:
        """What a message stores (and shows) of it; urls are added per reader."""
        shown: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "content_type": self.content_type,
            "kind": self.kind,
        }
        if self.width is not None and self.height is not None:
            shown["width"], shown["height"] = self.width, self.height
        if self.thumbnail_id is not None:
            shown["thumbnail"] = True
        if self.encrypted:
            shown["encrypted"] = True
        return shown


def _file_from_doc(doc: dict[str, Any]) -> StoredFile:
    meta = doc.get("metadata") or {}
    return StoredFile(
        id=str(doc["_id"]),
        name=doc.get("filename") or "file",
        size=int(doc.get("length", 0)),
        uploader_id=meta.get("uploader", ""),
        kind=meta.get("kind", ""),  # "" for a thumbnail
        content_type=meta.get("content_type", "application/octet-stream"),
        sha256=meta.get("sha256", ""),
        uploaded_at=doc.get("uploadDate") or utcnow(),
        width=meta.get("width"),
        height=meta.get("height"),
        thumbnail_id=str(meta["thumbnail_id"]) if meta.get("thumbnail_id") else None,
        claim=meta.get("claim"),
        claimed_at=meta.get("claimed_at"),
        conversation_id=meta.get("conversation_id"),
        attached=bool(meta.get("attached")),
        message_id=meta.get("message_id"),
        seq=meta.get("seq"),
        encrypted=bool(meta.get("encrypted")),
    )


def _oid(value: str) -> ObjectId | None:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None


class FileWriter:
    """One file written chunk by chunk in GridFS's format: each chunk is inserted as soon as
    it is full, and the file's document last, so nothing is visible until close() and at most
    one chunk waits in memory. (pymongo's own GridIn holds up to 32 MB of chunks before it
    writes any.) abort() removes what was written."""

    def __init__(
        self, files: AsyncCollection[dict[str, Any]], chunks: AsyncCollection[dict[str, Any]],
        name: str, in_flight: InFlight, lane: asyncio.Semaphore,
    ) -> None:  # fmt: skip
        self._files = files
        self._chunks = chunks
        self._in_flight = in_flight
        self._lane = lane
        self._oid = ObjectId()
        self.id = str(self._oid)
        self._name = name
        self._buffer = bytearray()
        self._count = 0  # chunks written
        self._length = 0

    async def write(self, data: bytes) -> None:
        """Append bytes (a chunk goes to the database each CHUNK_BYTES)."""
        self._length += len(data)
        if not self._buffer and len(data) == CHUNK_BYTES:  # a whole chunk: no copy
            await self._insert(data)
            return
        self._buffer += data
        while len(self._buffer) >= CHUNK_BYTES:
            with memoryview(self._buffer) as view:
                chunk = bytes(view[:CHUNK_BYTES])
            del self._buffer[:CHUNK_BYTES]
            await self._insert(chunk)

    async def _insert(self, chunk: bytes) -> None:
        async with self._lane, self._in_flight.pacer.bulk():
            with self._in_flight.operation(), db_errors():
                await self._chunks.insert_one(
                    {"files_id": self._oid, "n": self._count, "data": chunk}
                )
        self._count += 1

    async def close(self, metadata: dict[str, Any]) -> None:
        """Write the last chunk and the file's document with this metadata: the file exists
        from now on."""
        if self._buffer:
            await self._insert(bytes(self._buffer))
            self._buffer = bytearray()
        doc = {
            "_id": self._oid,
            "length": self._length,
            "chunkSize": CHUNK_BYTES,
            "uploadDate": utcnow(),
            "filename": self._name,
            "metadata": metadata,
        }
        with self._in_flight.operation(), db_errors():
            await self._files.insert_one(doc)

    async def abort(self) -> None:
        """Delete the chunks written so far; the file never existed."""
        self._buffer = bytearray()
        with self._in_flight.operation(), db_errors():
            await self._chunks.delete_many({"files_id": self._oid})
            await self._files.delete_one({"_id": self._oid})


class FileStore(Collections):
    """GridFS uploads and their thumbnails."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self.bucket = AsyncGridFSBucket(db, bucket_name=BUCKET, chunk_size_bytes=CHUNK_BYTES)
        self._files = db[f"{BUCKET}.files"]
        self._chunks = db[f"{BUCKET}.chunks"]
        self._lane: asyncio.Semaphore | None = None

    async def ensure_indexes(self) -> None:
        """GridFS's own two indexes (made here rather than at the first upload), the
        uploader's files, and the orphans' sweep."""
        await self._chunks.create_index([("files_id", ASCENDING), ("n", ASCENDING)], unique=True)
        await self._files.create_index([("filename", ASCENDING), ("uploadDate", ASCENDING)])
        await self._files.create_index([("metadata.uploader", ASCENDING)])
        await self._files.create_index(
            [("metadata.attached", ASCENDING), ("uploadDate", ASCENDING)]
        )

    def open_writer(self, name: str) -> FileWriter:
        """A writer for a new file under a new id (nothing is sent before the first chunk)."""
        if self._lane is None:  # made in the loop, on first use
            self._lane = asyncio.Semaphore(CHUNK_WRITES_AT_ONCE)
        return FileWriter(self._files, self._chunks, name, self.in_flight, self._lane)

    @translated
    async def put(self, data: bytes, name: str, metadata: dict[str, Any]) -> str:
        """Store small bytes (a thumbnail) as a file; its id."""
        file_id = ObjectId()
        await self.bucket.upload_from_stream_with_id(file_id, name, data, metadata=metadata)
        return str(file_id)

    @translated
    async def set_metadata(self, file_id: str, fields: dict[str, Any]) -> None:
        """Set fields of a stored file's metadata (after its bytes are written)."""
        await self._files.update_one(
            {"_id": ObjectId(file_id)}, {"$set": {f"metadata.{k}": v for k, v in fields.items()}}
        )

    @translated
    async def get(self, file_id: str) -> StoredFile | None:
        """The stored file with this id, or None (also for ids that cannot be ours)."""
        oid = _oid(file_id)
        if oid is None:
            return None
        doc = await self._files.find_one({"_id": oid})
        return _file_from_doc(doc) if doc else None

    @translated
    async def get_many(self, file_ids: Sequence[str]) -> dict[str, StoredFile]:
        """The stored files among these ids, by id."""
        oids = [oid for oid in map(_oid, file_ids) if oid is not None]
        if not oids:
            return {}
        return {
            str(doc["_id"]): _file_from_doc(doc)
            async for doc in self._files.find({"_id": {"$in": oids}})
        }

    async def read_chunks(self, file_id: str, start: int, length: int) -> AsyncIterator[bytes]:
        """length bytes of the file from start, chunk by chunk, the next chunk read while the
        caller sends this one: never more than two chunks in memory (pymongo's GridOut reads
        by cursor batches of up to 16 MB). NotFound-free: a file deleted meanwhile simply
        ends early."""
        oid = _oid(file_id)
        if oid is None:
            return
        with self.in_flight.operation(), db_errors():
            doc = await self._files.find_one({"_id": oid}, projection={"chunkSize": 1})
        if doc is None:
            return
        size = int(doc.get("chunkSize") or CHUNK_BYTES)
        number, skip = divmod(start, size)
        last = (start + length - 1) // size

        async def fetch(n: int) -> dict[str, Any] | None:
            with self.in_flight.operation(), db_errors():
                return await self._chunks.find_one({"files_id": oid, "n": n})

        left = length
        pending: asyncio.Task[dict[str, Any] | None] | None = asyncio.create_task(fetch(number))
        try:
            while left > 0 and pending is not None:
                chunk = await pending
                pending = asyncio.create_task(fetch(number + 1)) if number < last else None
                if chunk is None:
                    return
                data = bytes(chunk["data"])[skip : skip + left]
                if not data:
                    return
                left -= len(data)
                number, skip = number + 1, 0
                yield data
        finally:
            if pending is not None:  # the reader went away: the read ahead is not needed
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending

    @translated
    async def claim(
        self, file_ids: Sequence[str], uploader_id: str, key: str, conversation_id: str
    ) -> int:
        """Reserve the uploader's unattached files for its message `key` in the conversation
        (idempotent for the same key: a retried send claims them again); how many it holds."""
        oids = [ObjectId(f) for f in file_ids]
        result = await self._files.update_many(
            {
                "_id": {"$in": oids},
                "metadata.uploader": uploader_id,
                "metadata.kind": {"$exists": True},
                "$or": [
                    {"metadata.claim": None},
                    {"metadata.claim": key, "metadata.conversation_id": conversation_id},
                ],
            },
            {"$set": {"metadata.claim": key, "metadata.conversation_id": conversation_id,
                      "metadata.claimed_at": utcnow()}},
        )  # fmt: skip
        if result.matched_count == len(oids):
            return len(oids)
        return await self._files.count_documents(
            {"_id": {"$in": oids}, "metadata.claim": key, "metadata.uploader": uploader_id}
        )

    @translated
    async def release(self, file_ids: Sequence[str], uploader_id: str, key: str) -> None:
        """Undo claim() for files whose message was not stored."""
        await self._files.update_many(
            {
                "_id": {"$in": [ObjectId(f) for f in file_ids]},
                "metadata.uploader": uploader_id,
                "metadata.claim": key,
                "metadata.attached": {"$ne": True},
            },
            {"$set": {"metadata.claim": None, "metadata.conversation_id": None}},
        )

    @translated
    async def confirm(self, file_ids: Sequence[str], message_id: str, seq: int) -> None:
        """The claimed files' message is stored: they are attached to it."""
        await self._files.update_many(
            {"_id": {"$in": [ObjectId(f) for f in file_ids]}},
            {"$set": {"metadata.attached": True, "metadata.message_id": message_id,
                      "metadata.seq": seq}},
        )  # fmt: skip

    @translated
    async def delete(self, file_ids: Sequence[str]) -> None:
        """Delete files and their thumbnails (a deleted message's, or orphans)."""
        oids = [oid for oid in map(_oid, file_ids) if oid is not None]
        cursor = self._files.find({"_id": {"$in": oids}}, projection={"metadata.thumbnail_id": 1})
        thumbs = [
            ObjectId(d["metadata"]["thumbnail_id"])
            async for d in cursor
            if (d.get("metadata") or {}).get("thumbnail_id")
        ]
        for oid in oids + thumbs:
            with contextlib.suppress(NoFile):
                await self.bucket.delete(oid)

    @translated
    async def unattached_before(self, moment: datetime) -> list[StoredFile]:
        """Uploads (not thumbnails) older than moment whose message is not known to be stored."""
        cursor = self._files.find(
            {
                "metadata.attached": {"$ne": True},
                "metadata.kind": {"$exists": True},
                "uploadDate": {"$lt": moment},
            },
            limit=ORPHANS_PER_SWEEP,
        )
        return [_file_from_doc(doc) async for doc in cursor]

    @translated
    async def take_for_sweep(self, found: Sequence[StoredFile]) -> list[str]:
        """Of the orphans the sweep found, the ones still as it found them (not claimed or
        attached since), marked so that no send can claim them any more: the ids to delete."""
        taken = []
        for stored in found:
            result = await self._files.update_one(
                {"_id": ObjectId(stored.id), "metadata.claim": stored.claim,
                 "metadata.attached": {"$ne": True}},
                {"$set": {"metadata.claim": SWEPT, "metadata.conversation_id": None}},
            )  # fmt: skip
            if result.modified_count:
                taken.append(stored.id)
        return taken

    @translated
    async def delete_headless_chunks(self, since: datetime, before: datetime) -> int:
        """Delete the chunks of uploads begun between since and before that never got their
        file document (the server stopped half way); how many files they were. Chunk ids
        carry the time the upload began, so a sweep reads only its window."""
        window = {"$gte": ObjectId.from_datetime(since), "$lt": ObjectId.from_datetime(before)}
        cursor = await self._chunks.aggregate(
            [{"$match": {"files_id": window}}, {"$group": {"_id": "$files_id"}}]
        )
        ids = [doc["_id"] async for doc in cursor]
        known = {d["_id"] async for d in self._files.find({"_id": {"$in": ids}}, {"_id": 1})}
        headless = [oid for oid in ids if oid not in known]
        if headless:
            await self._chunks.delete_many({"files_id": {"$in": headless}})
        return len(headless)

    @translated
    async def count(self) -> int:
        """Every file and thumbnail stored (tests)."""
        return await self._files.count_documents({})

    @translated
    async def chunk_count(self) -> int:
        """Every chunk stored (tests: an aborted upload leaves none)."""
        return await self._chunks.count_documents({})

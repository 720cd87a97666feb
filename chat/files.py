"""The rules of attachments, without storage: what a file is (from its bytes, never its name),
which names are safe in a header, and what is done to images before they are stored
(decoded, bounded, stripped of their metadata, given a thumbnail).

The image work is synchronous and CPU-bound: callers run `clean_image` in an executor.
"""

from __future__ import annotations

import dataclasses
import io
import re
import unicodedata
import warnings
from typing import BinaryIO, Literal
from urllib.parse import quote

from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from chat.errors import ValidationFailed

Kind = Literal["image", "gif", "file"]

MAX_PIXELS = 40_000_000  # per frame: a 40 MP photo decodes to 160 MB; beyond is a bomb to us
# A GIF or animated WebP is decoded frame by frame to check it: frames x pixels is bounded
# too, so that a thousand full-size frames cannot keep a core busy for a minute.
MAX_ANIMATION_PIXELS = 400_000_000
MAX_FRAMES = 2_000
THUMBNAIL_PX = 320  # the longer side of a thumbnail, at most
THUMBNAIL_QUALITY = 80
REENCODE_QUALITY = 90  # a JPEG that had to be turned upright is encoded again at this quality
MAX_NAME_CHARS = 180  # a file name's length after cleaning (the extension is kept)
EXIF_ORIENTATION = 0x0112
SNIFF_BYTES = 16  # what sniff() needs to see of the start of a file

# Kinds of `file` whose type we name; everything else is application/octet-stream (HTML and
# SVG included: they are never served as what they are).
_FILE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"\x1a\x45\xdf\xa3", "video/webm"),
)
# Major brands of ISO base media files that are not MP4 video (the rest are: isom, mp41, ...).
# Such photos are files here: Pillow cannot check them, so they are never shown inline.
_FTYP_BRANDS = {
    b"heic": "image/heic", b"heix": "image/heic", b"mif1": "image/heif", b"msf1": "image/heif",
    b"avif": "image/avif", b"avis": "image/avif", b"qt  ": "video/quicktime",
    b"3gp4": "video/3gpp", b"3gp5": "video/3gpp", b"3g2a": "video/3gpp2", b"M4A ": "audio/mp4",
}  # fmt: skip
OCTET_STREAM = "application/octet-stream"
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def sniff(head: bytes) -> tuple[Kind, str, str | None]:
    """(kind, content type, Pillow format to decode with or None) from the first bytes."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "image/png", "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "image/jpeg", "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "image/webp", "WEBP"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif", "image/gif", "GIF"
    for magic, content_type in _FILE_MAGIC:
        if head.startswith(magic):
            return "file", content_type, None
    if head[4:8] == b"ftyp":  # ISO base media: the major brand says which
        return "file", _FTYP_BRANDS.get(head[8:12], "video/mp4"), None
    return "file", OCTET_STREAM, None


# Characters never kept in a name: controls, format characters (bidi overrides and isolates,
# zero-width ones), separators other than the plain space, surrogates and private use.
_DROPPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')


def safe_name(raw: str | None, kind: Kind) -> str:
    """A file name that is safe to show and to put in a header: no directory part, no control
    or bidi characters, no leading dots, at most MAX_NAME_CHARS (the extension kept); a
    default name when nothing is left."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]  # a path: its last part only
    name = "".join(
        " " if unicodedata.category(c) == "Zs" else c
        for c in name
        if unicodedata.category(c) not in _DROPPED_CATEGORIES
    )
    name = _WINDOWS_FORBIDDEN.sub("_", name)
    name = re.sub(r" +", " ", name).strip(" .")  # "..", " .bashrc" and "a. " lose their dots
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16 and stem:
            name = stem[: MAX_NAME_CHARS - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            name = name[:MAX_NAME_CHARS].rstrip(" .")
    if not name:
        name = {"image": "image", "gif": "animation.gif", "file": "file"}[kind]
    return name


def content_disposition(name: str, *, inline: bool) -> str:
    """The Content-Disposition of a download (RFC 6266): an ASCII fallback in `filename` and
    the real name, percent-encoded UTF-8, in `filename*`."""
    fallback = "".join(c if c.isascii() and c.isprintable() else "_" for c in name)
    fallback = fallback.replace("\\", "_").replace('"', "_")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


class BadFile(ValidationFailed):
    """A file the server will not store: empty, truncated, undecodable, or too many pixels."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="file")


@dataclasses.dataclass(frozen=True)
class CleanImage:
    """What clean_image made: the stored image's type and size in pixels, its frame count,
    and a thumbnail (WebP bytes and size)."""

    content_type: str
    width: int
    height: int
    frames: int
    thumbnail: bytes
    thumbnail_width: int
    thumbnail_height: int
    rewritten: bool  # False: the original bytes are stored as they came (GIF)


class _Borrowed(io.BufferedReader):
    """The caller's file, which closing the image must leave open (Pillow closes the file of
    an image with several frames)."""

    def close(self) -> None:
        self.detach()


def _open(src: BinaryIO, fmt: str) -> Image.Image:
    """Open (headers only) and check the pixel count before anything is decoded."""
    src.seek(0)
    src = _Borrowed(src)  # type: ignore[arg-type]
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns (or raises) past its limit; ours is lower.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(src, formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise BadFile(f"The image has more than {MAX_PIXELS:,} pixels.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadFile("The image could not be read: it is damaged or not really an image.") from exc
    width, height = image.size
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise BadFile(
            f"The image is {width} x {height} pixels; at most {MAX_PIXELS:,} pixels are accepted."
        )
    return image


def _thumbnail(frame: Image.Image) -> tuple[bytes, int, int]:
    thumb = frame.copy()
    thumb.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
    if thumb.mode not in ("RGB", "RGBA"):
        alpha = "transparency" in thumb.info or "A" in thumb.mode
        thumb = thumb.convert("RGBA" if alpha else "RGB")
    out = io.BytesIO()
    thumb.save(out, "WEBP", quality=THUMBNAIL_QUALITY)
    return out.getvalue(), thumb.width, thumb.height


# The application extensions a GIF keeps: the loop count (Netscape's, and its older twin).
GIF_KEPT_APPLICATIONS = (b"NETSCAPE2.0", b"ANIMEXTS1.0")


def strip_gif_metadata(src: BinaryIO, dst: BinaryIO) -> bool:
    """Copy a (decoded, so well-formed) GIF block by block into dst without its comment
    extensions and application extensions (XMP, ICC, editors' data) other than the loop
    count; frames, palettes and timing pass byte for byte. Whether anything was left out
    (when not, dst holds a copy the caller need not store)."""
    header = src.read(13)  # signature, version, logical screen descriptor
    dst.write(header)
    dropped = False
    if header[10] & 0x80:  # a global colour table
        dst.write(src.read(3 << ((header[10] & 0x07) + 1)))
    while introducer := src.read(1):
        if introducer == b"\x3b":  # trailer
            dst.write(introducer)
            break
        if introducer == b"\x2c":  # an image: descriptor, local colour table, LZW data
            descriptor = src.read(9)
            if len(descriptor) < 9:
                raise BadFile("The image is truncated or damaged and could not be decoded.")
            dst.write(introducer + descriptor)
            if descriptor[8] & 0x80:
                dst.write(src.read(3 << ((descriptor[8] & 0x07) + 1)))
            dst.write(src.read(1))  # LZW minimum code size
            _copy_sub_blocks(src, dst)
            continue
        if introducer != b"\x21":  # not a block: what follows is not part of the image
            dst.write(b"\x3b")
            return True
        label = src.read(1)  # an extension: its sub-blocks, the first one read here
        size = src.read(1)
        data = src.read(size[0]) if size else b""
        keep = (
            label in (b"\xf9", b"\x01")
            or (  # graphic control, plain text
                label == b"\xff" and data[:11] in GIF_KEPT_APPLICATIONS
            )
        )
        out = dst if keep else None
        if out is not None:
            out.write(introducer + label + size + data)
        dropped = dropped or not keep
        if size not in (b"", b"\x00"):
            _copy_sub_blocks(src, out)
    return dropped


def _copy_sub_blocks(src: BinaryIO, dst: BinaryIO | None) -> None:
    """Sub-blocks up to and including the empty one that ends them (dst None: skip them)."""
    while size := src.read(1):
        data = src.read(size[0])
        if dst is not None:
            dst.write(size + data)
        if size == b"\x00":
            return


def clean_image(src: BinaryIO, fmt: str, dst: BinaryIO) -> CleanImage:
    """Decode the whole image (BadFile when it is truncated, undecodable or too large), write
        the version to store into dst (JPEG, PNG and WebP without EXIF, XMP or comments; a JPEG
        turned upright by its orientation; a GIF block for block, its comments and application data
    other than the loop count left out, so its animation is untouched), and
        make a thumbnail of its first frame. Synchronous: run it in an executor."""
    image = _open(src, fmt)
    try:
        frames = getattr(image, "n_frames", 1)
        if frames > MAX_FRAMES or frames * image.width * image.height > MAX_ANIMATION_PIXELS:
            raise BadFile(f"The animation has too many frames ({frames}).")
        try:
            for frame in ImageSequence.Iterator(image):
                frame.load()  # every frame decodes: a truncated one is refused now
            image.seek(0)
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise BadFile("The image is truncated or damaged and could not be decoded.") from exc
        if fmt == "GIF":
            thumb, tw, th = _thumbnail(image.convert("RGBA"))
            src.seek(0)
            rewritten = strip_gif_metadata(src, dst)
            return CleanImage(
                "image/gif", image.width, image.height, frames, thumb, tw, th, rewritten=rewritten
            )
        icc = image.info.get("icc_profile")  # colours, not metadata about the person
        orientation = image.getexif().get(EXIF_ORIENTATION, 1) if fmt == "JPEG" else 1
        turned = orientation in range(2, 9)
        upright = ImageOps.exif_transpose(image) if turned else image
        image.info = {}  # EXIF (GPS), XMP, comments: nothing of it is written again
        if fmt == "JPEG":
            if turned:
                upright.info = {}
                upright.save(dst, "JPEG", quality=REENCODE_QUALITY, icc_profile=icc, comment=b"")
            else:  # the same quantization: no loss of quality from stripping
                image.save(
                    dst, "JPEG", quality="keep", subsampling="keep", icc_profile=icc,
                    comment=b"", exif=b"", xmp=b"",
                )  # fmt: skip
        elif fmt == "PNG":
            extra = {"save_all": True} if frames > 1 else {}
            image.save(dst, "PNG", icc_profile=icc, **extra)
        else:  # WEBP
            extra = {"save_all": True} if frames > 1 else {}
            image.save(
                dst, "WEBP", quality=REENCODE_QUALITY, icc_profile=icc,
                exif=b"", xmp=b"", **extra,
            )  # fmt: skip
        image.seek(0)
        thumb, tw, th = _thumbnail(upright)
        return CleanImage(
            IMAGE_TYPES[fmt], upright.width, upright.height, frames, thumb, tw, th, rewritten=True
        )
    finally:
        image.close()

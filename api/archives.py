"""Opening an uploaded archive (.zip or .npz, which is a zip) without trusting it.

Limits are checked before anything is unpacked: the entry count from the
end-of-central-directory record (so a central directory of millions of entries
is never parsed), then the declared uncompressed sizes (zipfile never inflates a
member past its declared size: a lying header fails its CRC/size check), then
every entry's path: no absolute paths, no '..', no symbolic links, no encryption.
Nothing is ever extracted to disk.
"""

from __future__ import annotations

import re
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from api.errors import ApiError
from models.settings import Settings

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Limits:
    """What one upload may grow into."""

    archive_bytes: int
    archive_files: int
    dataset_bytes: int
    classes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            archive_bytes=settings.max_archive_bytes,
            archive_files=settings.max_archive_files,
            dataset_bytes=settings.max_dataset_bytes,
            classes=settings.max_classes,
        )


def invalid(field: str, message: str) -> ApiError:
    """422 for content that cannot become a data set, with the field path."""
    return ApiError(422, "invalid_dataset", f"{field}: {message}", [{"field": field, "message": message}])


def too_large(field: str, message: str) -> ApiError:
    """413 for content over one of the configured limits."""
    return ApiError(413, "too_large", f"{field}: {message}", [{"field": field, "message": message}])


def is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) in (b"PK\x03\x04", _EOCD)


def entry_count(path: Path) -> int | None:
    """The entry count the archive's end record declares (None when there is no end record)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        start = max(0, size - (65535 + 22))
        handle.seek(start)
        tail = handle.read()
        at = tail.rfind(_EOCD)
        if at < 0 or at + 22 > len(tail):
            return None
        count = int(struct.unpack_from("<H", tail, at + 10)[0])
        if count != 0xFFFF or at < 20 or tail[at - 20 : at - 16] != _ZIP64_LOCATOR:
            return count
        (offset,) = struct.unpack_from("<Q", tail, at - 12)
        if offset + 40 > size:
            return None
        handle.seek(offset)
        record = handle.read(40)
        if record[:4] != _ZIP64_EOCD:
            return None
        return int(struct.unpack_from("<Q", record, 32)[0])


def open_archive(path: Path, limits: Limits) -> zipfile.ZipFile:
    """The upload as a ZipFile whose every entry passed the limits and the path checks."""
    count = entry_count(path)
    if count is None:
        raise invalid("file", "not a valid .zip or .npz archive (truncated or corrupt?)")
    if count > limits.archive_files:
        raise too_large("file", f"the archive holds {count} entries; at most {limits.archive_files} are accepted")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise invalid("file", f"not a valid .zip or .npz archive ({exc})") from None
    try:
        entries = archive.infolist()
        if len(entries) > limits.archive_files:
            raise too_large("file", f"the archive holds {len(entries)} entries; at most {limits.archive_files}")
        total = sum(entry.file_size for entry in entries)
        if total > limits.archive_bytes:
            raise too_large(
                "file", f"the archive unpacks to {total} bytes; at most {limits.archive_bytes} are accepted"
            )
        for entry in entries:
            check_entry(entry)
    except BaseException:
        archive.close()
        raise
    return archive


def check_entry(entry: zipfile.ZipInfo) -> None:
    """Refuse entries that would escape a folder if extracted, links, and encrypted entries."""
    name = entry.filename
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or _DRIVE.match(name) or ".." in parts or "\x00" in name:
        raise invalid("file", f"{name!r}: unsafe path in the archive (absolute, '..' or backslash)")
    if stat.S_ISLNK(entry.external_attr >> 16):
        raise invalid("file", f"{name!r}: symbolic links are not allowed in an upload")
    if entry.flag_bits & 0x1:
        raise invalid("file", f"{name!r}: encrypted archive entries are not supported")

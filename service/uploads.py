"""Receive a multipart upload straight to disk, chunk by chunk, under a hard size cap and a deadline.

The request body is fed to python-multipart's streaming parser as it arrives; the video part is
written to its final file in the data dir as each chunk is parsed, so an upload is never held whole in
memory (nor spooled to a temporary file first). A body declaring, or reaching, more than the cap is
refused with 413 the moment that is known; a client that sends nothing for ``idle_seconds``, or
trickles slower than ``min_bytes_per_second`` after that, is answered 408. Either way the partial file
is deleted.

The file is locked (``flock``) from its creation until the job is admitted, so :func:`sweep_orphans`
can tell, at start-up, an upload in progress from one a crash left behind.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import re
import time
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.errors import ApiError
from service.jobs import JobStore

log = logging.getLogger(__name__)

FILE_FIELD = "video"
TEXT_FIELDS = frozenset({"difficulty", "action_class", "competition", "event", "diver", "round"})
MAX_TEXT_FIELD_BYTES = 1024
FORM_OVERHEAD_BYTES = 64 * 1024  # part headers and text fields on top of the video itself


@dataclass
class UploadLimits:
    max_bytes: int
    idle_seconds: float
    min_bytes_per_second: int


@dataclass
class ReceivedUpload:
    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)
    handle: BinaryIO | None = None  # open, holding the lock, until release()

    def release(self) -> None:
        """Unlock the file (once its job is admitted, or the file deleted)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "upload_too_large",
                    f"The upload is larger than this server's limit of {max_bytes / 2**20:g} MiB.")


def part_names(disposition: bytes) -> tuple[str | None, str | None]:
    """(name, filename) of a form part's Content-Disposition, ``filename*`` (RFC 2231 / 6266) included."""
    message = Message()
    message["content-disposition"] = disposition.decode("utf-8", "replace")
    name = message.get_param("name", header="content-disposition")
    return (collapse_rfc2231_value(name) if name is not None else None), message.get_filename()


class _FormReceiver:
    """python-multipart callbacks: text fields into memory (small), the video part into ``path``."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self.file: BinaryIO | None = None
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part: str | None = None
        self._is_file = False
        self._text = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
            "on_header_field": self._header_field, "on_header_value": self._header_value_part,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
        }

    def _part_begin(self) -> None:
        self._disposition, self._part, self._is_file, self._text = b"", None, False, bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        name, filename = part_names(self._disposition)
        if name is None:
            raise ApiError(400, "bad_request", "A form part has no name in its Content-Disposition header.")
        self._part = name
        self._is_file = filename is not None or name == FILE_FIELD
        if self._is_file:
            if name != FILE_FIELD:
                raise ApiError(422, "invalid_request", f"Send the video file in the form field '{FILE_FIELD}'.")
            if self.file is not None:
                raise ApiError(422, "invalid_request", "Send one video per request.")
            self.filename = Path(filename or "").name[:200] or "upload"
            self.path = self.path.with_suffix(_suffix(self.filename))
            self.file = self.path.open("wb")
            fcntl.flock(self.file, fcntl.LOCK_EX)
        elif name not in TEXT_FIELDS:
            raise ApiError(422, "invalid_request",
                           f"Unknown form field '{name}'; the fields are '{FILE_FIELD}' (the file) and "
                           f"{', '.join(sorted(TEXT_FIELDS))}.")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.size += end - start
            if self.size > self.max_bytes:
                raise too_large(self.max_bytes)
            self.file.write(data[start:end])
        else:
            self._text += data[start:end]
            if len(self._text) > MAX_TEXT_FIELD_BYTES:
                raise ApiError(422, "invalid_request", f"The form field '{self._part}' is too long.")

    def _part_end(self) -> None:
        if not self._is_file:
            self.fields[self._part] = self._text.decode("utf-8", "replace").strip()

    def discard(self) -> None:
        if self.file is not None:
            self.path.unlink(missing_ok=True)
            self.file.close()


def too_slow(limits: UploadLimits) -> ApiError:
    return ApiError(408, "upload_timeout",
                    f"The upload stalled: nothing arrived for {limits.idle_seconds:g} s, or it arrived slower than "
                    f"{limits.min_bytes_per_second} bytes per second. Send it again on a better connection.")


async def receive_upload(request: Request, path: Path, limits: UploadLimits) -> ReceivedUpload:
    """Stream the multipart body into ``path`` (its suffix follows the uploaded name).

    Raises :class:`ApiError` 413 (too large), 415 (not multipart), 400 (malformed), 408 (stalled) or 422
    (no video part, unknown or oversize fields); nothing is left on disk then. The caller must
    ``release()`` the upload once its job is admitted (or the file deleted).
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       f"Send the video as multipart/form-data, with the file in the field '{FILE_FIELD}'.")
    if b"boundary" not in params:
        raise ApiError(400, "bad_request", "The multipart/form-data Content-Type has no boundary.")
    limit = limits.max_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limits.max_bytes)
    receiver = _FormReceiver(path, limits.max_bytes)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    chunks = request.stream().__aiter__()
    started, received = time.monotonic(), 0
    try:
        while True:
            # the next chunk must come within idle_seconds, and the average rate stay above the minimum
            wait = limits.idle_seconds
            if limits.min_bytes_per_second:
                budget = limits.idle_seconds + received / limits.min_bytes_per_second
                wait = min(wait, budget - (time.monotonic() - started))
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), max(wait, 0.0))
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise too_slow(limits) from None
            received += len(chunk)
            if received > limit:
                raise too_large(limits.max_bytes)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        receiver.discard()
        raise ApiError(400, "bad_request", f"The multipart body is malformed: {exc}") from exc
    except (ApiError, ClientDisconnect, OSError):
        receiver.discard()
        raise
    if receiver.filename is None:
        raise ApiError(422, "missing_video", f"The form has no file in the field '{FILE_FIELD}'.")
    receiver.file.flush()
    return ReceivedUpload(path=receiver.path, filename=receiver.filename, size=receiver.size, fields=receiver.fields,
                          handle=receiver.file)


def sweep_orphans(upload_dir: Path, store: JobStore) -> int:
    """Delete uploads that no accepted job owns and no request is writing (left by a crash); their count."""
    if not upload_dir.is_dir():
        return 0
    active = set(store.unfinished_ids())
    removed = 0
    for path in upload_dir.iterdir():
        if not path.is_file() or path.stem in active:
            continue
        with path.open("rb") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a request is receiving it right now
            record = store.get(path.stem)  # admitted since the listing above (by another API process)?
            if record is not None and not record.status.finished:
                continue
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("deleted %d upload(s) left behind by an interrupted request in %s", removed, upload_dir)
    return removed


def _suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".bin"

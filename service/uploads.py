"""Receive a multipart upload straight to disk, chunk by chunk, under a hard size cap.

The request body is fed to python-multipart's streaming parser as it arrives; the video part is
written to its final file in the data dir as each chunk is parsed, so an upload is never held whole in
memory (nor spooled to a temporary file first). A body declaring, or reaching, more than the cap is
refused with 413 the moment that is known, and the partial file is deleted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.errors import ApiError

FILE_FIELD = "video"
TEXT_FIELDS = frozenset({"difficulty", "action_class", "competition", "event", "diver", "round"})
MAX_TEXT_FIELD_BYTES = 1024
FORM_OVERHEAD_BYTES = 64 * 1024  # part headers and text fields on top of the video itself


@dataclass
class ReceivedUpload:
    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "upload_too_large",
                    f"The upload is larger than this server's limit of {max_bytes / 2**20:g} MiB.")


class _FormReceiver:
    """python-multipart callbacks: text fields into memory (small), the video part into ``path``."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.size = 0
        self._file: BinaryIO | None = None
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
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ApiError(400, "bad_request", "A form part has no name in its Content-Disposition header.")
        self._part = options[b"name"].decode("utf-8", "replace")
        self._is_file = b"filename" in options
        if self._is_file:
            if self._part != FILE_FIELD:
                raise ApiError(422, "invalid_request", f"Send the video file in the form field '{FILE_FIELD}'.")
            if self._file is not None:
                raise ApiError(422, "invalid_request", "Send one video per request.")
            self.filename = Path(options[b"filename"].decode("utf-8", "replace")).name[:200] or "upload"
            self.path = self.path.with_suffix(_suffix(self.filename))
            self._file = self.path.open("wb")
        elif self._part not in TEXT_FIELDS:
            raise ApiError(422, "invalid_request",
                           f"Unknown form field '{self._part}'; the fields are '{FILE_FIELD}' (the file) and "
                           f"{', '.join(sorted(TEXT_FIELDS))}.")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.size += end - start
            if self.size > self.max_bytes:
                raise too_large(self.max_bytes)
            self._file.write(data[start:end])
        else:
            self._text += data[start:end]
            if len(self._text) > MAX_TEXT_FIELD_BYTES:
                raise ApiError(422, "invalid_request", f"The form field '{self._part}' is too long.")

    def _part_end(self) -> None:
        if not self._is_file:
            self.fields[self._part] = self._text.decode("utf-8", "replace").strip()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def receive_upload(request: Request, path: Path, max_bytes: int) -> ReceivedUpload:
    """Stream the multipart body into ``path`` (its suffix follows the uploaded name).

    Raises :class:`ApiError` 413 (too large), 415 (not multipart), 400 (malformed) or 422 (no video part,
    unknown or oversize fields); nothing is left on disk then.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       f"Send the video as multipart/form-data, with the file in the field '{FILE_FIELD}'.")
    if b"boundary" not in params:
        raise ApiError(400, "bad_request", "The multipart/form-data Content-Type has no boundary.")
    limit = max_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(max_bytes)
    receiver = _FormReceiver(path, max_bytes)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        receiver.close()
        receiver.path.unlink(missing_ok=True)
        raise ApiError(400, "bad_request", f"The multipart body is malformed: {exc}") from exc
    except (ApiError, ClientDisconnect, OSError):
        receiver.close()
        receiver.path.unlink(missing_ok=True)
        raise
    receiver.close()
    if receiver.filename is None:
        raise ApiError(422, "missing_video", f"The form has no file in the field '{FILE_FIELD}'.")
    return ReceivedUpload(path=receiver.path, filename=receiver.filename, size=receiver.size, fields=receiver.fields)


def _suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".bin"

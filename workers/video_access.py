"""Open a job's video only inside the folders the server scores from, checked when it is opened.

An archive job names a file that was inside an ``AQA_ARCHIVE_ROOTS`` folder when its batch was created;
by the time a worker opens it, the file or a folder on its way may have been replaced by a symlink that
leads elsewhere. So the worker opens the file first, asks the kernel which file it actually opened
(``/proc/self/fd``), refuses it unless that real path lies inside an allowed folder, and then gives the
decoder the open descriptor's own path: nothing can be swapped between the check and the reads.
Uploads are held to the upload folder the same way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.schemas import JobRequest
from service.settings import ServiceSettings
from video.errors import VideoError, VideoFileNotFoundError


class OutsideRootsError(VideoError):
    """The file a job names resolves outside every folder this server may read videos from."""

    code = "outside_archive"


def allowed_roots(request: JobRequest, settings: ServiceSettings) -> list[Path]:
    return [settings.upload_dir] if request.owns_file else list(settings.archive_roots)


@contextmanager
def open_inside(path: Path, roots: list[Path]) -> Iterator[Path]:
    """Open ``path``, check the file really opened is a regular file inside one of ``roots``, yield a path to it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise VideoFileNotFoundError(f"The file {Path(path).name} cannot be opened ({exc.strerror}).") from exc
    try:
        opened = Path(f"/proc/self/fd/{fd}")
        real = Path(os.readlink(opened)) if opened.is_symlink() else Path(os.path.realpath(path))
        if not any(real.is_relative_to(root.resolve()) for root in roots):
            raise OutsideRootsError(f"{Path(path).name} leads to a file outside the folders this server scores "
                                    "from (a symlink out of the archive); it was not read.")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VideoFileNotFoundError(f"{Path(path).name} is not a regular file.")
        yield opened if opened.is_symlink() else real
    finally:
        os.close(fd)

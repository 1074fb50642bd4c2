"""The one exception every video decoding failure turns into."""

from __future__ import annotations

import os

from mammut_video.errors import MammutVideoError


class VideoDecodeError(MammutVideoError):
    """A video file could not be read.

    Raised for every failure of ``read_clip`` / ``probe_video`` that depends on the file:
    missing, a directory, empty, truncated, corrupt, not a video, no video stream, or a
    requested segment outside the clip. Callers that walk a folder of videos catch this one
    type and skip the record.

    Attributes:
        path: the file that failed, as given.
        cause: what went wrong, in words (the backend's message, trimmed).
    """

    def __init__(self, path: str | os.PathLike[str], cause: str) -> None:
        self.path = os.fspath(path)
        self.cause = cause
        super().__init__(f"cannot decode video {self.path!r}: {cause}")

    def __reduce__(self):  # keep (path, cause) through pickling (DataLoader workers)
        return (type(self), (self.path, self.cause))

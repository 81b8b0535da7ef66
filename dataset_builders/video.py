"""Frames of a video file, decoded in order with OpenCV (`cv2.VideoCapture`), one frame in memory at a time.

Used by builders of data sets released as videos (DISFA). Frames are read sequentially, never by seeking: seeking in
compressed AVI files is not reliably frame-accurate, and a frame paired with the wrong label row would go unnoticed.
Frame indices are 0-based decoder positions.

After a decoding error the position of later frames is no longer certain: FFmpeg may drop the bad frame, drop its
neighbour too, and report timestamps that no longer match the pictures (seen with OpenCV 4.14 on a damaged MJPG AVI).
So from the first frame the decoder fails on (a failed read followed by more frames, or a timestamp that jumps ahead
of the running count), the rest of the video is reported as undecodable rather than risk shifting every later frame
against its labels.
"""

from pathlib import Path
from typing import Container, Iterator

import cv2
import numpy as np

#: Failed reads in a row after which the stream is taken to have ended (a damaged frame fails once; the end of the
#: stream fails every time).
MAX_CONSECUTIVE_FAILURES = 16


class UnreadableVideoError(OSError):
    """OpenCV cannot open a file as a video."""


class VideoFrames:
    """Sequential access to the frames of one video file.

        with VideoFrames("LeftVideoSN001_comp.avi") as video:
            for index, rgb in video.read(wanted={0, 10, 20}):
                ...  # rgb: (H, W, 3) uint8 RGB array, or None for a frame that could not be decoded

    Attributes:
        path: the video file.
        declared_frames: the frame count the container declares (0 if it declares none).
        fps: the declared frame rate (0.0 if unknown).
        length: after `read` has run to the end, the number of frames in the video: the larger of the declared count
            and the number of frames the decoder went through. Frames below `length` are part of the video, decoded
            or not.
        broken_at: after `read`, the index of the first frame the decoder failed on with frames after it (from
            there on no frame is yielded decoded), or None.

    Raises:
        UnreadableVideoError: if OpenCV cannot open `path`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            self._capture.release()
            reason = "no such file" if not self.path.exists() else "OpenCV cannot open it as a video"
            raise UnreadableVideoError(f"{self.path}: {reason}")
        self.declared_frames = max(int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        self.fps = max(float(self._capture.get(cv2.CAP_PROP_FPS)), 0.0)
        self.length = self.declared_frames
        self.broken_at: int | None = None

    def _timestamp_index(self) -> int:
        """The index of the frame just grabbed, from its timestamp; -1 when there is no usable timestamp (a missing
        timestamp reads as 0, which is never ahead of the count)."""
        if self.fps <= 0:
            return -1
        return int(round(self._capture.get(cv2.CAP_PROP_POS_MSEC) * self.fps / 1000.0))

    def read(self, wanted: Container[int] | None = None) -> Iterator[tuple[int, np.ndarray | None]]:
        """Decode the whole video in order; yield `(index, rgb)` for each frame index in `wanted` (every frame when
        `wanted` is None), in increasing order.

        `rgb` is an (H, W, 3) uint8 array in RGB order, or `None` for a wanted frame of the video that could not be
        decoded, or that comes at or after `broken_at`. Wanted indices at or beyond `length` are not yielded: they
        are not part of the video.
        """
        last = -1
        failures = 0
        frames_after_break = 0
        while failures < MAX_CONSECUTIVE_FAILURES:
            if not self._capture.grab():
                failures += 1
                continue
            if self.broken_at is None and (failures or self._timestamp_index() > last + 1):
                self.broken_at = last + 1
            failures = 0
            if self.broken_at is not None:
                # Counted to estimate the length, never yielded: their positions are uncertain.
                frames_after_break += 1
                continue
            last += 1
            if wanted is None or last in wanted:
                ok, bgr = self._capture.retrieve()
                yield last, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok and bgr is not None else None
        end = last + 1 if self.broken_at is None else self.broken_at + 1 + frames_after_break
        self.length = max(self.declared_frames, end)
        for index in range(last + 1, self.length):
            if wanted is None or index in wanted:
                yield index, None

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_video_frames(path: str | Path,
                      wanted: Container[int] | None = None) -> Iterator[tuple[int, np.ndarray | None]]:
    """Stream `(index, rgb)` for the wanted 0-based frame indices of the video at `path` (see `VideoFrames.read`)."""
    with VideoFrames(path) as video:
        yield from video.read(wanted)

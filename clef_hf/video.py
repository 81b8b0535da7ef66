"""Facial behaviour over a video: lazy frame decoding and frame-by-frame analysis with the facial-behavior pipeline.

`iter_video_frames` decodes a video lazily, one kept frame at a time, so memory stays flat however long the video
is. With OpenCV (the default backend) skipped frames are only grabbed, never decoded into pixels or converted to RGB.
`analyze_video` sends the kept frames to a `pipeline("facial-behavior")` in chunks of `batch_size` and yields one
record per frame::

    >>> from transformers import pipeline
    >>> from clef_hf.video import analyze_video, video_results_to_dataframe
    >>> pipe = pipeline("facial-behavior", model="path/to/clef-au-model")
    >>> records = analyze_video(pipe, "interview.mp4", frame_stride=5)  # a generator: decodes as it is consumed
    >>> table = video_results_to_dataframe(records)  # one row per face per kept frame, with frame, timestamp, face_id

With a facial-behavior pipeline, faces are detected every `detect_every` kept frames (default 5) and followed in
between by their landmarks (`clef_hf.face_tracking.FaceTracker`), so every face entry carries a `face_id` that stays
the same for one person through the clip; `detect_every=1` detects on every frame (ids still link the frames).

A frame's timestamp is its index divided by the video's frame rate (from the container), which is exact for
constant-frame-rate video; when the container reports no frame rate, the decoder's position is used instead.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypedDict

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from .face_tracking import DEFAULT_DETECT_EVERY, FaceTracker
from .visualization import results_to_dataframe

__all__ = [
    "VIDEO_BACKENDS",
    "VideoFileNotFoundError",
    "VideoFrameResult",
    "analyze_video",
    "available_video_backends",
    "iter_video_frames",
    "video_results_to_dataframe",
]

#: Decoding backends `iter_video_frames` knows; "pyav" works only where PyAV (`import av`) is installed.
VIDEO_BACKENDS: tuple[str, ...] = ("opencv", "pyav")

#: A decoded frame: (index of the frame in the video, timestamp in seconds, the frame as an RGB image).
Frame = tuple[int, float, Image.Image]


class VideoFileNotFoundError(FileNotFoundError, ValueError):
    """The video file does not exist. Both a `FileNotFoundError` and a `ValueError` (like the other unreadable-video
    errors of this module), so either `except` clause catches it."""


class VideoFrameResult(TypedDict, total=False):
    """One kept frame of `analyze_video`: its index in the video, its timestamp in seconds, the pipeline's output for
    it (one entry per face; `[]` where no face was found) and, with `return_frames=True`, the frame itself."""

    frame: int
    timestamp: float
    faces: list[dict[str, Any]]
    image: Image.Image


def available_video_backends() -> list[str]:
    """The backends of `VIDEO_BACKENDS` usable here: always "opencv", and "pyav" where PyAV can be imported."""
    backends = ["opencv"]
    try:
        import av  # noqa: F401
    except ImportError:
        return backends
    return [*backends, "pyav"]


def _check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        kind = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"{name} must be {kind}, got {value!r}.")


def _check_video_path(path: str | os.PathLike) -> str:
    """The path as a string; raise if it names no file (URLs and image-sequence patterns like `img_%04d.png` pass)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"A video path must be a str or os.PathLike, got {type(path).__name__} ({path!r}).")
    text = os.fspath(path)
    if "://" in text or "%" in text:
        return text
    if not os.path.exists(text):
        raise VideoFileNotFoundError(2, "Video file not found", text)
    if os.path.isdir(text):
        raise ValueError(f"Video path {text!r} is a directory, not a video file.")
    return text


def iter_video_frames(
    path: str | os.PathLike,
    frame_stride: int = 1,
    max_frames: int | None = None,
    backend: str = "opencv",
) -> Iterator[Frame]:
    """Decode a video lazily, yielding `(frame_index, timestamp_seconds, image)` for every `frame_stride`-th frame.

    The file is opened and its first frame read when this function is called, so a missing, unreadable or empty
    video raises here rather than at the first `next()`; the rest is decoded as the iterator is consumed, one frame
    at a time, and the decoder is released when the iterator is exhausted or closed (`with contextlib.closing(...)`
    or `.close()` to release it early).

    Args:
        path: the video file (anything the backend opens: OpenCV also takes URLs and `img_%04d.png` patterns).
        frame_stride: keep frames 0, `frame_stride`, 2 * `frame_stride`, ... With OpenCV the frames in between are
            grabbed but not decoded into pixels.
        max_frames: stop after this many kept frames (`None`: to the end of the video).
        backend: "opencv" (default, `cv2.VideoCapture`) or "pyav" (needs PyAV; it decodes every frame but converts
            only the kept ones).

    Yields:
        `(frame_index, timestamp, image)`: the frame's index in the video (0-based, counting skipped frames), its
        timestamp in seconds (`frame_index / fps`; the decoder's position where the video reports no frame rate),
        and the frame as an RGB `PIL.Image.Image`.

    Raises:
        VideoFileNotFoundError: (a `FileNotFoundError` and a `ValueError`) the file does not exist.
        ValueError: the file cannot be opened as a video or holds no decodable frame; bad arguments.
        ImportError: `backend="pyav"` without PyAV installed.
    """
    _check_positive_int("frame_stride", frame_stride)
    _check_positive_int("max_frames", max_frames, allow_none=True)
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"Unknown video backend {backend!r}; choose one of {VIDEO_BACKENDS}.")
    source = _check_video_path(path)
    if backend == "opencv":
        return _iter_opencv(source, frame_stride, max_frames)
    return _iter_pyav(source, frame_stride, max_frames)


def _valid_fps(fps: Any) -> float | None:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        return None
    return fps if math.isfinite(fps) and fps > 0 else None


def _iter_opencv(source: str, frame_stride: int, max_frames: int | None) -> Iterator[Frame]:
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        capture.release()
        raise ValueError(f"Cannot open video {source!r} with OpenCV: not a video file, or a codec OpenCV lacks.")
    if not capture.grab():
        capture.release()
        raise ValueError(f"Video {source!r} has no frames OpenCV can decode (empty or corrupt file).")
    fps = _valid_fps(capture.get(cv2.CAP_PROP_FPS))
    return _opencv_frames(capture, source, fps, frame_stride, max_frames)


def _opencv_frames(
    capture: cv2.VideoCapture, source: str, fps: float | None, frame_stride: int, max_frames: int | None
) -> Iterator[Frame]:
    """Frames of an opened capture whose frame 0 has already been grabbed."""
    try:
        index, kept = 0, 0
        while True:
            if index % frame_stride == 0:
                # The position after grabbing a frame is that frame's timestamp; read it before retrieving.
                timestamp = index / fps if fps else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                ok, bgr = capture.retrieve()
                if not ok or bgr is None:
                    raise ValueError(f"OpenCV could not decode frame {index} of video {source!r}.")
                image = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                del bgr
                yield index, timestamp, image
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
            index += 1
            if not capture.grab():
                return
    finally:
        capture.release()


def _iter_pyav(source: str, frame_stride: int, max_frames: int | None) -> Iterator[Frame]:
    try:
        import av
    except ImportError as error:
        raise ImportError(
            f"backend='pyav' needs PyAV (`pip install av`) to read {source!r}; PyAV is not installed here. "
            "Use backend='opencv'."
        ) from error
    try:
        container = av.open(source)
    except Exception as error:  # PyAV raises a family of FFmpeg errors whose base class moved between versions
        raise ValueError(f"Cannot open video {source!r} with PyAV: {error}") from error
    if not container.streams.video:
        container.close()
        raise ValueError(f"{source!r} holds no video stream.")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = _valid_fps(stream.average_rate) or _valid_fps(stream.guessed_rate)
    decoded = container.decode(stream)
    try:
        first = next(decoded)
    except StopIteration:
        container.close()
        raise ValueError(f"Video {source!r} has no frames PyAV can decode (empty or corrupt file).") from None
    except Exception as error:
        container.close()
        raise ValueError(f"PyAV could not decode the first frame of video {source!r}: {error}") from error
    return _pyav_frames(container, first, decoded, fps, frame_stride, max_frames)


def _pyav_frames(
    container: Any, first: Any, decoded: Iterator[Any], fps: float | None, frame_stride: int, max_frames: int | None
) -> Iterator[Frame]:
    try:
        frame, index, kept = first, 0, 0
        while True:
            if index % frame_stride == 0:
                timestamp = index / fps if fps else float(frame.time or 0.0)
                yield index, timestamp, frame.to_image()
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
            frame = next(decoded, None)
            if frame is None:
                return
            index += 1
    finally:
        container.close()


def analyze_video(
    pipe: Callable[..., Any],
    path: str | os.PathLike,
    frame_stride: int = 1,
    batch_size: int = 8,
    max_frames: int | None = None,
    *,
    backend: str = "opencv",
    return_frames: bool = False,
    detect_every: int = DEFAULT_DETECT_EVERY,
    **pipeline_kwargs: Any,
) -> Iterator[VideoFrameResult]:
    """Run a facial-behavior pipeline over a video, yielding one record per kept frame, in order.

    Frames are decoded lazily (see `iter_video_frames`) and sent to `pipe` as lists of at most `batch_size` PIL
    images, so at most one chunk of frames is held at a time and memory stays flat over long videos. Records are
    yielded as soon as their chunk is analysed; collect them with `list(...)` or `video_results_to_dataframe(...)`.

    Args:
        pipe: a `transformers.pipeline("facial-behavior", ...)` (any callable that maps a list of images to a list
            with one result per image works).
        path: the video file.
        frame_stride: analyse every `frame_stride`-th frame.
        batch_size: frames per pipeline call; also passed to the pipeline as its `batch_size`.
        max_frames: stop after this many analysed frames.
        backend: the decoding backend of `iter_video_frames`.
        return_frames: also put each frame's RGB image in its record under "image" (e.g. for `plot_face_scores`);
            memory stays flat only if the caller does not keep them all.
        detect_every: with a facial-behavior pipeline that detects faces, run its face detector on every
            `detect_every`-th kept frame and track the faces in between ([`FaceTracker`]); each face entry then has
            a "face_id". Without landmarks (Haar without dlib) every frame is detected. Other callables, and
            `detect_faces=False`, are called on the frames as they are.
        **pipeline_kwargs: passed on to every pipeline call (`detect_faces`, `top_k`, `candidate_labels`, ...).

    Yields:
        `{"frame": index, "timestamp": seconds, "faces": pipeline output for the frame}` (plus "image").

    Raises:
        The errors of `iter_video_frames`, at call time; `ValueError` during iteration if the pipeline returns a
        number of results other than the number of frames it was given.
    """
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("detect_every", detect_every)
    tracker = None
    if callable(getattr(pipe, "face_finder", None)) and pipeline_kwargs.get("detect_faces", True):
        finder = pipe.face_finder(pipeline_kwargs.get("face_detector"), pipeline_kwargs.get("face_threshold"))
        # Without landmarks (Haar without dlib) there is nothing to follow between detections: detect every frame,
        # and the ids still come from matching the boxes.
        tracker = FaceTracker(finder, detect_every=detect_every if finder.landmarker is not None else 1)
    frames = iter_video_frames(path, frame_stride=frame_stride, max_frames=max_frames, backend=backend)
    return _analyze_frames(pipe, frames, os.fspath(path), batch_size, return_frames, pipeline_kwargs, tracker)


def _analyze_frames(
    pipe: Callable[..., Any],
    frames: Iterator[Frame],
    source: str,
    batch_size: int,
    return_frames: bool,
    pipeline_kwargs: dict[str, Any],
    tracker: FaceTracker | None = None,
) -> Iterator[VideoFrameResult]:
    chunk: list[Frame] = []
    tracked: list[list[dict[str, Any]]] = []
    try:
        for frame in frames:
            chunk.append(frame)
            if tracker is not None:
                tracked.append(_tracked_faces(tracker, frame[2]))
            if len(chunk) == batch_size:
                yield from _analyze_chunk(pipe, chunk, source, batch_size, return_frames, pipeline_kwargs, tracked)
                chunk, tracked = [], []
        if chunk:
            yield from _analyze_chunk(pipe, chunk, source, batch_size, return_frames, pipeline_kwargs, tracked)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _analyze_chunk(
    pipe: Callable[..., Any],
    chunk: list[Frame],
    source: str,
    batch_size: int,
    return_frames: bool,
    pipeline_kwargs: dict[str, Any],
    tracked: list[list[dict[str, Any]]] | None = None,
) -> Iterator[VideoFrameResult]:
    images: list[Any] = [image for _, _, image in chunk]
    if tracked:
        # The tracker found the faces: the pipeline crops and scores them without detecting again.
        images = [{"image": image, "faces": faces} for image, faces in zip(images, tracked)]
    outputs = pipe(images, batch_size=batch_size, **pipeline_kwargs)
    if not isinstance(outputs, list) or len(outputs) != len(images):
        got = f"{len(outputs)} results" if isinstance(outputs, list) else f"a {type(outputs).__name__}"
        raise ValueError(
            f"The pipeline returned {got} for {len(images)} frames (frames {chunk[0][0]}-{chunk[-1][0]} of video "
            f"{source!r}); it must return one list of faces per frame."
        )
    for (index, timestamp, image), faces in zip(chunk, outputs):
        record: VideoFrameResult = {"frame": index, "timestamp": timestamp, "faces": faces}
        if return_frames:
            record["image"] = image
        yield record


def _tracked_faces(tracker: FaceTracker, image: Image.Image) -> list[dict[str, Any]]:
    """The tracker's faces in one frame, as the `faces` of a `{"image", "faces"}` pipeline input."""
    return [{"box": face.box, "landmarks": face.landmarks, "face_id": face.face_id}
            for face in tracker(np.asarray(image.convert("RGB")))]


def video_results_to_dataframe(
    records: Iterable[VideoFrameResult], *, labels: Sequence[str] | None = None, keep_empty: bool = False
) -> pd.DataFrame:
    """A `pandas.DataFrame` of `analyze_video` records: one row per face per frame, with `frame` and `timestamp`.

    Same as `clef_hf.visualization.results_to_dataframe(records, ...)` (see there for the columns), but rejects
    anything that is not a sequence of video records. A generator of records is consumed.
    """
    return results_to_dataframe(records, labels=labels, keep_empty=keep_empty, require_video=True)

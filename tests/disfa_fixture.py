"""A DISFA copy in the released layout, small enough for tests: MJPG videos written with OpenCV, one label file per
subject and AU, and optionally the same frames pre-extracted.

Each frame carries its own identity in its colour (`frame_pixels`): red = 20 x frame number, green = the camera, so a
test can check that every stored image sits next to the labels of its own frame.
"""

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from clef_hf.vocabulary import DISFA_AU_NUMBERS

#: One subject from each standard part (part1, part2, part3), so every fold has train and test subjects.
SUBJECTS = ("SN001", "SN013", "SN003")
#: The 12 AUs DISFA codes; the builder reads 8 of them.
CODED_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
CAMERA_GREEN = {"left": 60, "right": 180}

PixelFunction = Callable[[str, str, int, tuple[int, int]], np.ndarray]


def intensity(subject: str, au: int, frame: int) -> int:
    """The fixture's intensity (0-5) of `au` in `frame` of `subject`: every value occurs in every AU column."""
    return (frame + CODED_AUS.index(au) + int(subject[2:])) % 6


def expected_intensities(subject: str, frame: int) -> list[int]:
    return [intensity(subject, au, frame) for au in DISFA_AU_NUMBERS]


def frame_pixels(subject: str, camera: str, frame: int, size: tuple[int, int]) -> np.ndarray:
    """A uniform (H, W, 3) RGB frame: red 20 x frame, green by camera, blue by subject."""
    width, height = size
    colour = (20 * frame, CAMERA_GREEN[camera], (40 * int(subject[2:])) % 200)
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (height, width, 3)).copy()


def frame_identity(image: Image.Image) -> tuple[int, str]:
    """`(frame, camera)` read back from an image made by `frame_pixels` (after lossy coding)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    frame = int(round(rgb[..., 0].mean() / 20))
    camera = "left" if rgb[..., 1].mean() < 120 else "right"
    return frame, camera


def write_video(path: Path, frames: list[np.ndarray], fps: float = 20.0) -> Path:
    """Write RGB `frames` as an MJPG AVI and check that OpenCV reads back as many frames."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    assert count == len(frames), f"{path}: wrote {len(frames)} frames, OpenCV reads {count}"
    return path


def write_disfa(
    root: Path,
    subjects: tuple[str, ...] = SUBJECTS,
    num_frames: int = 8,
    cameras: tuple[str, ...] = ("left", "right"),
    size: tuple[int, int] = (32, 24),
    pixels: PixelFunction = frame_pixels,
    video_frames: dict[str, int] | None = None,
    label_frames: dict[str, int] | None = None,
    missing_label_files: set[tuple[str, int]] = frozenset(),
    drop_rows: dict[tuple[str, int], set[int]] | None = None,
    replace_rows: dict[tuple[str, int], dict[int, str]] | None = None,
    extra_rows: dict[tuple[str, int], list[str]] | None = None,
    write_videos: bool = True,
    write_frames: bool = False,
) -> Path:
    """Write a DISFA copy under `root` and return `root`.

    Args:
        num_frames: frames per video and labelled frames per subject, unless `video_frames` / `label_frames` say
            otherwise for a subject.
        missing_label_files: `(subject, au)` whose label file is not written.
        drop_rows / replace_rows / extra_rows: per `(subject, au)`, frames whose row is left out, rows replaced by
            the given text, and lines appended at the end.
        write_frames: also write the frames as PNG files under `Frames/{camera}/{subject}/{frame:05d}.png`.
    """
    video_frames, label_frames = video_frames or {}, label_frames or {}
    drop_rows, replace_rows, extra_rows = drop_rows or {}, replace_rows or {}, extra_rows or {}
    for subject in subjects:
        folder = root / "ActionUnit_Labels" / subject
        folder.mkdir(parents=True)
        for au in CODED_AUS:
            if (subject, au) in missing_label_files:
                continue
            lines = []
            for frame in range(1, label_frames.get(subject, num_frames) + 1):
                if frame in drop_rows.get((subject, au), ()):
                    continue
                lines.append(replace_rows.get((subject, au), {}).get(frame, f"{frame},{intensity(subject, au, frame)}"))
            lines += extra_rows.get((subject, au), [])
            (folder / f"{subject}_au{au}.txt").write_text("\n".join(lines) + "\n")
        for camera in cameras:
            frames = [pixels(subject, camera, frame, size)
                      for frame in range(1, video_frames.get(subject, num_frames) + 1)]
            if write_videos:
                directory = root / ("Videos_LeftCamera" if camera == "left" else "Videos_RightCamera")
                directory.mkdir(exist_ok=True)
                name = f"LeftVideo{subject}_comp.avi" if camera == "left" else f"RightVideo{subject}_Comp.avi"
                write_video(directory / name, frames)
            if write_frames:
                directory = root / "Frames" / camera / subject
                directory.mkdir(parents=True)
                for frame, rgb in enumerate(frames, start=1):
                    Image.fromarray(rgb).save(directory / f"{frame:05d}.png")
    return root


def video_path(root: Path, subject: str, camera: str = "left") -> Path:
    if camera == "left":
        return root / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi"
    return root / "Videos_RightCamera" / f"RightVideo{subject}_Comp.avi"


def break_frame(path: Path, index: int) -> None:
    """Overwrite the start of the JPEG of frame `index` (0-based) and of the next one in an MJPG AVI, so that FFmpeg
    fails on frame `index` and its view of the following frames is no longer reliable."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    end = starts[index + 1] + 80 if index + 1 < len(starts) else len(data)
    data[starts[index]:end] = bytes(end - starts[index])
    path.write_bytes(bytes(data))

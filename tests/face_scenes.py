"""Scenes with real faces at known places, for the face tests and `benchmarks/face_detection.py` / `face_tracking.py`:
the astronaut's head (`skimage.data.astronaut()`, a real photograph) pasted at chosen sizes, tilts and positions on
a plain canvas, with the reference landmarks carried through the same transform.

The reference landmarks are dlib's 5-point predictions on the upright, full-size original (`ASTRONAUT_LANDMARKS`),
so a landmark error measured on a scene is the error added by resizing, rotating and detecting, not an error
against a human annotation.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.data import astronaut

#: The astronaut's 5 landmarks in `astronaut()` (512 x 512), dlib's 5-point order, as dlib 20.0 fits them in the HOG
#: box (175, 76, 265, 166).
ASTRONAUT_LANDMARKS = np.array([[255, 104], [237, 105], [195, 101], [212, 103], [224, 135]], dtype=np.float64)

#: The head region cut from `astronaut()` (x0, y0, x1, y1): the face with hair, ears and some of the suit.
HEAD_REGION = (120, 30, 330, 230)


@dataclass
class PlacedFace:
    """Where a pasted face ended up: its 5 reference landmarks (5, 2) in canvas pixels, its scale and tilt."""

    landmarks: np.ndarray
    scale: float
    angle: float

    @property
    def centre(self) -> np.ndarray:
        return self.landmarks.mean(axis=0)


def blank_canvas(width: int, height: int) -> np.ndarray:
    """A grey left-to-right gradient, (height, width, 3) uint8: no face, some texture for the detectors."""
    ramp = np.linspace(90, 170, width, dtype=np.float64)
    return np.repeat(np.repeat(ramp[None, :, None], height, axis=0), 3, axis=2).astype(np.uint8)


def paste_head(canvas: np.ndarray, centre: tuple[float, float], scale: float, angle: float) -> PlacedFace:
    """Paste the astronaut's head into `canvas` (in place), its landmark centre at `centre`, resized by `scale` and
    rotated by `angle` degrees (counter-clockwise on screen, as `PIL.Image.rotate`).

    Returns:
        The pasted face's reference landmarks in canvas pixels.
    """
    x0, y0, x1, y1 = HEAD_REGION
    head = Image.fromarray(astronaut()[y0:y1, x0:x1]).convert("RGBA")
    landmarks = ASTRONAUT_LANDMARKS - [x0, y0]
    pivot = landmarks.mean(axis=0)
    theta = np.radians(angle)
    # canvas = R(-theta) * scale * (head - pivot) + centre; in image coordinates (y down) a counter-clockwise turn
    # on screen is a negative angle.
    rotation = scale * np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    matrix = np.eye(3)
    matrix[:2, :2] = rotation
    matrix[:2, 2] = np.asarray(centre) - rotation @ pivot
    inverse = np.linalg.inv(matrix)
    height, width = canvas.shape[:2]
    warped = head.transform((width, height), Image.AFFINE, data=tuple(inverse[:2].reshape(-1)),
                            resample=Image.BILINEAR)
    base = Image.fromarray(canvas)
    base.alpha_composite(warped) if base.mode == "RGBA" else base.paste(warped, (0, 0), warped)
    canvas[...] = np.asarray(base.convert("RGB"))
    return PlacedFace(landmarks=landmarks @ rotation.T + matrix[:2, 2], scale=scale, angle=angle)


def several_faces_scene() -> tuple[np.ndarray, list[PlacedFace]]:
    """An 800 x 480 canvas with four astronaut heads: sizes 0.8x, 1x and 1.4x of the original (eye distances of
    about 35, 44 and 62 px) and tilts of 0, +15 and -15 degrees."""
    canvas = blank_canvas(800, 480)
    faces = [
        paste_head(canvas, (110, 130), 0.8, 0.0),
        paste_head(canvas, (300, 300), 1.0, 15.0),
        paste_head(canvas, (520, 160), 1.4, -15.0),
        paste_head(canvas, (700, 360), 1.0, 0.0),
    ]
    return canvas, faces


def tilted_astronaut(angle: float, size: int = 400) -> tuple[np.ndarray, PlacedFace]:
    """One astronaut head at 1.2x, tilted by `angle` degrees, centred on a `size` x `size` canvas."""
    canvas = blank_canvas(size, size)
    return canvas, paste_head(canvas, (size / 2, size / 2), 1.2, angle)


def two_faces_clip(
    num_frames: int, width: int = 640, height: int = 400
) -> tuple[list[np.ndarray], list[list[PlacedFace]]]:
    """A clip of two astronaut heads crossing the frame: person 0 left to right in the top half (growing from 0.8x
    to 1.0x), person 1 right to left in the bottom half (tilting between -10 and +10 degrees); about 7.5 px a frame
    at 60 frames.

    Returns:
        The frames ((height, width, 3) uint8) and, per frame, the two placed faces in person order.
    """
    frames, placements = [], []
    for index in range(num_frames):
        progress = index / max(1, num_frames - 1)
        canvas = blank_canvas(width, height)
        first = paste_head(canvas, (100 + progress * (width - 200), 100), 0.8 + 0.2 * progress, 0.0)
        second = paste_head(canvas, (width - 100 - progress * (width - 200), height - 110), 0.9,
                            10.0 * np.sin(2 * np.pi * progress))
        frames.append(canvas)
        placements.append([first, second])
    return frames, placements

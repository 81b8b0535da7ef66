"""Face detection and cropping: the face boxes of the `facial-behavior` pipeline and the face crops the data set
builders store for full camera frames (BP4D, BP4D+, DISFA).

The default detector is OpenCV's bundled frontal-face Haar cascade (opencv-python-headless<5 ships it). Any callable
that maps an RGB `numpy` array of shape (H, W, 3) to a list of `(x0, y0, x1, y1)` boxes in pixels can replace it.

Builders crop once, while they prepare the data set, and store the crops in the prepared Arrow files: that is the
cache, so training never runs the detector.
"""

from typing import Callable

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]
FaceDetector = Callable[[np.ndarray], list[Box]]


def _import_cv2():
    # Imported on first use, inside `try`, so that code loading this module without OpenCV (the remote-code copy of
    # the pipeline with `detect_faces=False`) still works.
    try:
        import cv2
    except ImportError as error:
        raise ImportError(
            "HaarFaceDetector needs OpenCV: pip install 'opencv-python-headless<5' (5.x ships no Haar cascades)."
        ) from error
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(getattr(cv2, "data", None), "haarcascades"):
        raise ImportError(
            f"HaarFaceDetector needs OpenCV's Haar cascades, which OpenCV {getattr(cv2, '__version__', '?')} lacks "
            "(5.x dropped them): pip install 'opencv-python-headless<5', or pass detect_faces=False with face crops."
        )
    return cv2


class HaarFaceDetector:
    """OpenCV's frontal-face Haar cascade. Boxes are returned largest first."""

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24,
                 max_side: int = 480):
        cv2 = _import_cv2()

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV could not load its face cascade from {path}; install opencv-python-headless<5.")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.max_side = max_side

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        """
        Args:
            rgb: (H, W, 3) uint8 RGB image.

        Returns:
            `(x0, y0, x1, y1)` pixel boxes, largest first; empty when no face is found.
        """
        cv2 = _import_cv2()

        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        # The cascade's cost grows with the pixel count; camera frames (1024x768 and up) are searched at most
        # `max_side` pixels wide, and the boxes scaled back.
        scale = min(1.0, self.max_side / max(gray.shape))
        if min(gray.shape) * scale < self.min_size:
            # No face of `min_size` fits (a thin strip would even shrink to zero rows, which cv2.resize refuses).
            return []
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self.cascade.detectMultiScale(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        boxes = [
            (int(x / scale), int(y / scale), int((x + w) / scale), int((y + h) / scale)) for x, y, w, h in found
        ]
        return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


def expand_box(box: Box, width: int, height: int, margin: float) -> Box:
    """A square around `box`, `margin` of its size larger on each side, clipped to the image."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (
        max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2))),
        min(width, int(round(cx + side / 2))), min(height, int(round(cy + side / 2))),
    )


def crop_face(image: Image.Image, detector: FaceDetector, size: int, margin: float = 0.2) -> Image.Image | None:
    """The largest detected face, with `margin`, resized to `size` x `size`; `None` if no face is found."""
    rgb = image.convert("RGB")
    boxes = detector(np.asarray(rgb))
    if not boxes:
        return None
    return rgb.crop(expand_box(boxes[0], rgb.width, rgb.height, margin)).resize((size, size), Image.BILINEAR)


__all__ = ["Box", "FaceDetector", "HaarFaceDetector", "crop_face", "expand_box"]

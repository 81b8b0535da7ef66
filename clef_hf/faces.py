"""Face detection and five facial landmarks: the faces of the `facial-behavior` pipeline, of video tracking
(`face_tracking.py`) and of the face crops the data set builders store for full camera frames (BP4D, BP4D+, DISFA).

Detectors, chosen by name (`make_face_detector`):

- "hog": dlib's HOG + linear SVM frontal-face detector (`dlib.get_frontal_face_detector`), the fast default on CPU;
- "cnn": dlib's MMOD CNN face detector (`mmod_human_face_detector.dat`), more accurate and much slower on CPU;
- "haar": OpenCV's frontal-face Haar cascade (opencv-python-headless<5 ships it), the detector of clef-hf <= 0.x;
- or any callable that maps an RGB `numpy` array of shape (H, W, 3) to a list of `(x0, y0, x1, y1)` pixel boxes.

[`FaceFinder`] runs a detector, fits dlib's 5-point shape predictor (`shape_predictor_5_face_landmarks.dat`, free to
use, shipped by `face-recognition-models`) in every box, and drops a box whose landmarks are implausible. The 68-point
predictor carries a non-commercial licence and is deliberately not used.

dlib is imported on first use, so that this module loads without it (Haar-only and remote-code use); the model
files are found inside the `face_recognition_models` package without importing it (its `__init__` needs
`pkg_resources`, which recent setuptools no longer ship).

Builders crop once, while they prepare the data set, and store the crops in the prepared Arrow files: that is the
cache, so training never runs the detector.
"""

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .face_alignment import align_face, alignment_matrix

Box = tuple[int, int, int, int]
FaceDetector = Callable[[np.ndarray], list[Box]]

#: The detector names `make_face_detector` (and the pipeline's `face_detector=`) accept.
FACE_DETECTORS: tuple[str, ...] = ("hog", "cnn", "haar")

#: The command that installs dlib and its model files; named by every error about them.
DLIB_INSTALL_COMMAND = "pip install dlib-bin face-recognition-models"

#: How far each landmark may move per pixel the box is shifted, on average, for the face to count as real
#: (see `FivePointLandmarker.drift`). Measured with HOG and CNN boxes: 0.00-0.05 on upright faces, up to 0.14 on
#: faces tilted 45 degrees, up to 0.18 on blurry lfw faces blown up 4x, 0.22 on the cameraman (three-quarter view);
#: at least 0.35 on every false positive HOG gives down to a score of -0.8 on `skimage.data` photos (rocket, coffee,
#: cat, the astronaut's suit).
DEFAULT_MAX_LANDMARK_DRIFT = 0.25

#: The box shift (fraction of the box width) used to measure the landmark drift.
DRIFT_SHIFT = 0.1

#: Faces smaller than this (box side, pixels) are not searched for or reported: too few pixels for landmarks.
MIN_FACE_SIZE = 20


# ---------------------------------------------------------------------------------------------------- dlib and models


def _import_dlib():
    try:
        import dlib
    except ImportError as error:
        raise ImportError(
            f"The 'hog' and 'cnn' face detectors and the facial landmarks need dlib: {DLIB_INSTALL_COMMAND}. "
            "Without dlib, pass face_detector='haar' (OpenCV; no landmarks, so no alignment)."
        ) from error
    return dlib


def dlib_available() -> bool:
    """Whether dlib and the `face_recognition_models` files can be used here."""
    return all(importlib.util.find_spec(name) is not None for name in ("dlib", "face_recognition_models"))


def dlib_model_path(filename: str) -> str:
    """The path of a model file of the `face-recognition-models` package (e.g. "shape_predictor_5_face_landmarks.dat").

    Raises:
        ImportError: the package is not installed, or lacks the file; the message names the pip command.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The face detectors and landmarks need dlib's model files: {DLIB_INSTALL_COMMAND}.")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", filename)
    if not os.path.isfile(path):
        raise ImportError(f"face_recognition_models has no {filename} (looked at {path}): {DLIB_INSTALL_COMMAND}.")
    return path


def _dlib_image(rgb: np.ndarray) -> np.ndarray:
    """`rgb` as the C-contiguous (H, W, 3) uint8 array dlib accepts; anything else is refused with its shape."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        described = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"Face detection takes an (H, W, 3) uint8 RGB array, got a {described}.")
    return np.ascontiguousarray(rgb)


def _detection_scale(height: int, width: int, max_side: int) -> float:
    """The scale a detector searches an image at: up to 2x (dlib's one pyramid upsampling, so faces down to about
    40 px are found), never beyond `max_side` pixels on the long side (huge photos are searched smaller)."""
    return min(2.0, max_side / max(height, width))


def _resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    resample = Image.BILINEAR if scale > 1 else Image.BOX
    return np.asarray(Image.fromarray(rgb).resize(size, resample))


# ---------------------------------------------------------------------------------------------------- detectors


class HogFaceDetector:
    """dlib's HOG frontal-face detector. `detect` returns `(box, score)` pairs, highest score first; calling the
    detector returns the boxes whose score reaches `threshold`.

    Args:
        threshold: the SVM score a detection needs (dlib's `adjust_threshold`; 0 is dlib's default, higher is
            stricter).
        max_side: the long side, in pixels, the image is searched at (at most twice its own size).
    """

    name = "hog"

    def __init__(self, threshold: float = 0.0, max_side: int = 1280):
        dlib = _import_dlib()
        self.detector = dlib.get_frontal_face_detector()
        self.threshold, self.max_side = float(threshold), int(max_side)

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[tuple[Box, float]]:
        """
        Args:
            rgb: (H, W, 3) uint8 RGB image.
            threshold: overrides the detector's threshold.

        Returns:
            `((x0, y0, x1, y1), score)` pairs in the pixels of `rgb`, highest score first.
        """
        rgb = _dlib_image(rgb)
        scale = _detection_scale(*rgb.shape[:2], self.max_side)
        if min(rgb.shape[:2]) * scale < MIN_FACE_SIZE:
            return []
        threshold = self.threshold if threshold is None else threshold
        rects, scores, _ = self.detector.run(_resized(rgb, scale), 0, threshold)
        found = [(_scaled_box((r.left(), r.top(), r.right(), r.bottom()), scale), float(score))
                 for r, score in zip(rects, scores)]
        return sorted(found, key=lambda item: -item[1])

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        return [box for box, _ in self.detect(rgb)]


class CnnFaceDetector(HogFaceDetector):
    """dlib's MMOD CNN face detector (`mmod_human_face_detector.dat`). Same interface as [`HogFaceDetector`]; the score
    is the CNN's confidence. Tens of times slower than HOG on a CPU (`benchmarks/face_detection.py`); `max_side=640`
    is about 4x faster than the default and misses faces under about 80 px of the searched image."""

    name = "cnn"

    def __init__(self, threshold: float = 0.0, max_side: int = 1280):
        dlib = _import_dlib()
        self.detector = dlib.cnn_face_detection_model_v1(dlib_model_path("mmod_human_face_detector.dat"))
        self.threshold, self.max_side = float(threshold), int(max_side)

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[tuple[Box, float]]:
        rgb = _dlib_image(rgb)
        scale = _detection_scale(*rgb.shape[:2], self.max_side)
        if min(rgb.shape[:2]) * scale < MIN_FACE_SIZE:
            return []
        threshold = self.threshold if threshold is None else threshold
        found = []
        for detection in self.detector(_resized(rgb, scale), 0):
            r = detection.rect
            if detection.confidence >= threshold:
                box = _scaled_box((r.left(), r.top(), r.right(), r.bottom()), scale)
                found.append((box, float(detection.confidence)))
        return sorted(found, key=lambda item: -item[1])


def _scaled_box(box: Sequence[float], scale: float) -> Box:
    return tuple(int(round(value / scale)) for value in box)  # type: ignore[return-value]


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
    """OpenCV's frontal-face Haar cascade. Boxes are returned largest first; it gives no scores."""

    name = "haar"

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

    def detect(self, rgb: np.ndarray, threshold: float | None = None) -> list[tuple[Box, float | None]]:
        """The boxes of `__call__`, each with score `None` (the cascade has none; `threshold` is ignored)."""
        return [(box, None) for box in self(rgb)]


def make_face_detector(detector: str | Callable, threshold: float | None = None) -> Any:
    """A face detector from its name ("hog", "cnn", "haar") or a callable (returned as it is).

    Args:
        detector: a name of `FACE_DETECTORS`, or a callable mapping an (H, W, 3) uint8 RGB array to boxes.
        threshold: the score threshold of "hog" / "cnn" (default 0.0); ignored by "haar" and callables.

    Raises:
        ValueError: an unknown name. ImportError: "hog" / "cnn" without dlib (the message names the pip command).
    """
    if callable(detector):
        return detector
    options = {} if threshold is None else {"threshold": threshold}
    if detector == "hog":
        return HogFaceDetector(**options)
    if detector == "cnn":
        return CnnFaceDetector(**options)
    if detector == "haar":
        return HaarFaceDetector()
    raise ValueError(f"face_detector={detector!r} is not a detector name; choose one of {FACE_DETECTORS} or pass a "
                     "callable (RGB array -> (x0, y0, x1, y1) boxes).")


# ---------------------------------------------------------------------------------------------------- landmarks


class FivePointLandmarker:
    """dlib's 5-point shape predictor: two corners of each eye and the bottom of the nose.

    Point order (dlib's): 0 and 1 the outer and inner corners of the eye on the image's right (the person's left
    eye), 2 and 3 the outer and inner corners of the eye on the image's left, 4 the bottom of the nose.
    """

    def __init__(self):
        dlib = _import_dlib()
        self._dlib = dlib
        self.predictor = dlib.shape_predictor(dlib_model_path("shape_predictor_5_face_landmarks.dat"))

    def __call__(self, rgb: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """
        Args:
            rgb: (H, W, 3) uint8 RGB image (C-contiguous).
            box: `(x0, y0, x1, y1)` in pixels, the face to fit.

        Returns:
            (5, 2) float64 `[x, y]` landmarks in the pixels of `rgb`.
        """
        x0, y0, x1, y1 = (int(round(value)) for value in box)
        shape = self.predictor(rgb, self._dlib.rectangle(x0, y0, x1, y1))
        return np.array([[point.x, point.y] for point in shape.parts()], dtype=np.float64)

    def drift(self, rgb: np.ndarray, box: Sequence[float], landmarks: np.ndarray | None = None) -> float:
        """How much the landmarks follow the box rather than the image: the mean landmark displacement when the box
        is shifted by `DRIFT_SHIFT` of its width, divided by that shift; the median over shifts left, right, up and
        down (one shift onto a neighbouring face or an edge may move the points on a real face).

        The shifts are made around the face's own square (`landmark_box`: where the alignment template puts the face,
        from the landmarks fitted in `box`), so that the measure does not depend on how a detector draws its boxes
        (the CNN's are tighter and higher than HOG's). On a face the landmarks stay on the eyes and nose (drift near
        0); in a box without a face the predictor returns its mean shape placed in the box, which moves with it
        (drift towards 1). Landmarks no similarity can map to the template give `inf`.
        """
        if landmarks is None:
            landmarks = self(rgb, box)
        try:
            box = landmark_box(landmarks)
        except ValueError:
            return float("inf")
        landmarks = self(rgb, box)
        x0, y0, x1, y1 = box
        shift = DRIFT_SHIFT * (x1 - x0)
        moved = []
        for dx, dy in ((shift, 0), (-shift, 0), (0, shift), (0, -shift)):
            shifted = self(rgb, (x0 + dx, y0 + dy, x1 + dx, y1 + dy))
            moved.append(np.linalg.norm(shifted - landmarks, axis=1).mean())
        return float(np.median(moved) / max(shift, 1e-6))


def landmark_box(landmarks: np.ndarray, scale: float = 1.13) -> tuple[float, float, float, float]:
    """The square, axis-aligned, that the alignment template gives the face of these landmarks (the face square of
    `face_alignment.FIVE_POINT_TEMPLATE`), `scale` times larger: 1.13 makes it about the size of a HOG box.

    Raises:
        ValueError: degenerate landmarks (see `face_alignment.alignment_matrix`).
    """
    inverse = np.linalg.inv(alignment_matrix(landmarks, crop_size=1, margin=0.0))
    centre = inverse[:2, :2] @ [0.5, 0.5] + inverse[:2, 2]
    half = np.sqrt(abs(np.linalg.det(inverse[:2, :2]))) * scale / 2
    return (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)


def implausible_landmarks(landmarks: np.ndarray, box: Sequence[float]) -> str | None:
    """Why five landmarks cannot be a face in `box`, or `None` if they can.

    Checked: every point lies inside the box; the eyes are apart (eye-centre distance at least 15% of the box
    width); the eye line is tilted less than 60 degrees; the nose lies below the eye line, on the face's own axis.
    """
    x0, y0, x1, y1 = box
    xs, ys = landmarks[:, 0], landmarks[:, 1]
    if not ((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)).all():
        return "a landmark lies outside the box"
    right_eye, left_eye, nose = landmarks[0:2].mean(axis=0), landmarks[2:4].mean(axis=0), landmarks[4]
    eye_vector = right_eye - left_eye  # image-left eye to image-right eye
    eye_distance = float(np.linalg.norm(eye_vector))
    if eye_distance < 0.15 * (x1 - x0):
        return f"the eyes are {eye_distance:.1f} px apart in a {x1 - x0} px box"
    if eye_vector[0] <= 0 or abs(np.degrees(np.arctan2(eye_vector[1], eye_vector[0]))) > 60:
        return "the eye line is tilted more than 60 degrees"
    down = np.array([-eye_vector[1], eye_vector[0]]) / eye_distance  # the face's downward axis
    if float((nose - (right_eye + left_eye) / 2) @ down) <= 0.1 * eye_distance:
        return "the nose is not below the eyes"
    return None


# ---------------------------------------------------------------------------------------------------- faces


@dataclass
class DetectedFace:
    """One face: `box` `(x0, y0, x1, y1)` in pixels (clipped to the image), the detector's `score` (`None` where it
    gives none, as Haar), and `landmarks`, (5, 2) `[x, y]` pixels in dlib's 5-point order, or `None` without dlib."""

    box: Box
    score: float | None = None
    landmarks: np.ndarray | None = None


class FaceFinder:
    """A detector, the 5-point landmarks of each face it finds, and false-positive rejection from those landmarks.

    Args:
        detector: "hog" (default), "cnn", "haar", or a callable (RGB array -> boxes).
        threshold: the detector's score threshold ("hog", "cnn"; default 0.0).
        landmarks: fit the 5-point landmarks (needs dlib). `None` (default): fit them where dlib is installed; with
            "hog" / "cnn" dlib is needed anyway.
        reject_implausible: drop a box whose landmarks are implausible ([`implausible_landmarks`]) or drift with the
            box ([`FivePointLandmarker.drift`] above `max_landmark_drift`). `None` (default): on for the named
            detectors, off for a callable (its boxes are the user's to trust).
        max_landmark_drift: see `DEFAULT_MAX_LANDMARK_DRIFT`.
        max_faces: keep at most this many faces (the first of `__call__`'s order); `None` keeps all.
        landmarker: a [`FivePointLandmarker`] to share (it holds the 5 MB predictor); one is made if `None`.
    """

    def __init__(
        self,
        detector: str | Callable = "hog",
        threshold: float | None = None,
        landmarks: bool | None = None,
        reject_implausible: bool | None = None,
        max_landmark_drift: float = DEFAULT_MAX_LANDMARK_DRIFT,
        max_faces: int | None = None,
        landmarker: "FivePointLandmarker | None" = None,
    ):
        self.detector = make_face_detector(detector, threshold)
        self.detector_name = detector if isinstance(detector, str) else "callable"
        if landmarks is None:
            landmarks = self.detector_name in ("hog", "cnn") or dlib_available()
        if landmarks:
            self.landmarker = landmarker if landmarker is not None else FivePointLandmarker()
        else:
            self.landmarker = None
        self.reject_implausible = isinstance(detector, str) if reject_implausible is None else reject_implausible
        self.max_landmark_drift = max_landmark_drift
        self.max_faces = max_faces

    def detect(self, rgb: np.ndarray) -> list[tuple[Box, float | None]]:
        """The detector's `(box, score)` pairs, boxes clipped to the image; a callable's boxes are checked."""
        height, width = rgb.shape[:2]
        if hasattr(self.detector, "detect"):
            found = self.detector.detect(rgb)
        else:
            found = [(box, None) for box in checked_boxes(self.detector(rgb), width, height, self.detector)]
        clipped = []
        for box, score in found:
            x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3])
            if x1 > x0 and y1 > y0:
                clipped.append(((x0, y0, x1, y1), score))
        return clipped

    def fit(self, rgb: np.ndarray, box: Box, score: float | None = None) -> DetectedFace | None:
        """The face in `box` with its landmarks, or `None` if they reject it (with `reject_implausible`)."""
        if self.landmarker is None:
            return DetectedFace(box=box, score=score)
        landmarks = self.landmarker(rgb, box)
        if self.reject_implausible:
            if implausible_landmarks(landmarks, box) is not None:
                return None
            if self.landmarker.drift(rgb, box, landmarks) > self.max_landmark_drift:
                return None
        else:
            # A user's box may not hold the predictor's points: they are kept, clipped to the box.
            landmarks = np.clip(landmarks, [box[0], box[1]], [box[2], box[3]])
        return DetectedFace(box=box, score=score, landmarks=landmarks)

    def __call__(self, rgb: np.ndarray) -> list[DetectedFace]:
        """
        Args:
            rgb: (H, W, 3) uint8 RGB image.

        Returns:
            The faces, highest score first (detectors without scores: in the detector's order).
        """
        rgb = _dlib_image(rgb)
        faces = []
        for box, score in self.detect(rgb):
            face = self.fit(rgb, box, score)
            if face is not None:
                faces.append(face)
        if all(face.score is not None for face in faces):
            faces.sort(key=lambda face: -face.score)  # otherwise the detector's order (Haar: largest first)
        return faces[: self.max_faces] if self.max_faces is not None else faces


def checked_boxes(boxes: Any, width: int, height: int, detector: Any, source: str = "the image") -> list[Box]:
    """A detector's boxes as integer pixel boxes clipped to the image; empty boxes are dropped.

    Raises:
        ValueError: a box is not four finite numbers; the message names the detector and `source`.
    """
    checked = []
    for box in list(boxes) if boxes is not None else []:
        values = np.asarray(box, dtype=np.float64).reshape(-1)
        if values.shape != (4,) or not np.isfinite(values).all():
            raise ValueError(
                f"The face detector {detector!r} returned {box!r} for {source}; expected boxes (x0, y0, x1, y1) in "
                "pixels."
            )
        x0, y0 = max(0, int(round(values[0]))), max(0, int(round(values[1])))
        x1, y1 = min(width, int(round(values[2]))), min(height, int(round(values[3])))
        if x1 > x0 and y1 > y0:
            checked.append((x0, y0, x1, y1))
    return checked


# ---------------------------------------------------------------------------------------------------- box crops


def expand_box(box: Box, width: int, height: int, margin: float) -> Box:
    """A square around `box`, `margin` of its size larger on each side, clipped to the image."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (
        max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2))),
        min(width, int(round(cx + side / 2))), min(height, int(round(cy + side / 2))),
    )


def crop_face(image: Image.Image, detector: FaceDetector | FaceFinder, size: int, margin: float = 0.2,
              align: bool = False) -> Image.Image | None:
    """The first face `detector` finds (largest for a plain detector; highest score for a [`FaceFinder`]), `size` x
    `size`; `None` if no face is found.

    With `align` (needs a `FaceFinder` with landmarks) the crop is the similarity-aligned face of
    `face_alignment.align_face` with `margin`; otherwise the square box crop with `margin`, resized.
    """
    rgb = image.convert("RGB")
    pixels = np.asarray(rgb)
    if isinstance(detector, FaceFinder):
        faces = detector(pixels)
        if not faces:
            return None
        if align and faces[0].landmarks is not None:
            return align_face(rgb, faces[0].landmarks, size, margin)
        box = faces[0].box
    else:
        boxes = detector(pixels)
        if not boxes:
            return None
        box = boxes[0]
    return rgb.crop(expand_box(box, rgb.width, rgb.height, margin)).resize((size, size), Image.BILINEAR)


__all__ = [
    "DEFAULT_MAX_LANDMARK_DRIFT", "DLIB_INSTALL_COMMAND", "FACE_DETECTORS", "Box", "CnnFaceDetector", "DetectedFace",
    "FaceDetector", "FaceFinder", "FivePointLandmarker", "HaarFaceDetector", "HogFaceDetector", "checked_boxes",
    "crop_face", "dlib_available", "dlib_model_path", "expand_box", "implausible_landmarks", "landmark_box",
    "make_face_detector",
]

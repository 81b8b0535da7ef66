"""Face tracking through a video: detect every `detect_every` frames, follow the faces in between with the 5-point
landmarks, and keep a stable `face_id` per person.

On a detection frame the detector's faces are matched to the tracked ones by box overlap (IoU, greedily, best pair
first); a matched face keeps its id and an unmatched detection starts a new id. A track that no detection matches
(the detector missed a face it found before, which HOG does on some tilted or small faces) is followed by its
landmarks as between detections, for at most `max_missed` detection frames in a row. On the frames in between each
track is re-fitted in its previous box: the shape predictor finds the landmarks where the face has moved to, and the
box follows them (shifted with the landmarks' centre, scaled with their spread).
A track whose re-fitted landmarks fail the [`FaceFinder`]'s plausibility checks (the face left, turned away or was
covered) ends, and the next frame is a detection frame: re-detection on loss.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .faces import Box, DetectedFace, FaceFinder, implausible_landmarks

#: Detect every this many frames by default: 5x fewer detector runs; `benchmarks/face_tracking.py` measures the
#: agreement with detecting on every frame.
DEFAULT_DETECT_EVERY = 5


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `(x0, y0, x1, y1)` boxes; 0 for disjoint or empty boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return float(intersection / union) if union > 0 else 0.0


def match_by_iou(previous: Sequence[Box], current: Sequence[Box], min_iou: float) -> dict[int, int]:
    """Greedy one-to-one matching, best overlap first: `{index in current: index in previous}` for pairs with an IoU of
    at least `min_iou`."""
    pairs = sorted(
        ((box_iou(p, c), i, j) for i, p in enumerate(previous) for j, c in enumerate(current)), reverse=True
    )
    matched: dict[int, int] = {}
    used = set()
    for iou, i, j in pairs:
        if iou < min_iou:
            break
        if i in used or j in matched:
            continue
        matched[j] = i
        used.add(i)
    return matched


@dataclass
class TrackedFace(DetectedFace):
    """A [`DetectedFace`] with the `face_id` of its track and whether this frame `detected` it (else tracked it)."""

    face_id: int = -1
    detected: bool = True
    missed: int = 0  # detection frames in a row whose detections did not include this face


class FaceTracker:
    """Faces with stable ids through the frames of one video; call it on each frame in order.

    Args:
        finder: the [`FaceFinder`] that detects faces (it must fit landmarks: tracking follows them).
        detect_every: run the detector on every `detect_every`-th frame (1: every frame, no landmark tracking).
        min_iou: the box overlap a detection needs with a track to continue it.
        max_missed: how many detection frames in a row may miss a tracked face before its track ends (0: a face the
            detector misses ends its track).
    """

    def __init__(self, finder: FaceFinder, detect_every: int = DEFAULT_DETECT_EVERY, min_iou: float = 0.3,
                 max_missed: int = 2):
        if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
            raise ValueError(f"detect_every must be a positive integer, got {detect_every!r}.")
        if finder.landmarker is None and detect_every > 1:
            raise ValueError("Tracking between detections follows the landmarks, and this FaceFinder fits none "
                             "(dlib is missing, or landmarks=False): pass detect_every=1.")
        self.finder, self.detect_every, self.min_iou, self.max_missed = finder, detect_every, min_iou, max_missed
        self.tracks: list[TrackedFace] = []
        self.next_id = 0
        self.frames_since_detection = 0
        self._force_detection = True
        self.detections_run = 0

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def __call__(self, rgb: np.ndarray) -> list[TrackedFace]:
        """
        Args:
            rgb: the next frame, (H, W, 3) uint8 RGB.

        Returns:
            The faces in this frame, each with its `face_id`, in the order of their ids.
        """
        if self._force_detection or self.frames_since_detection + 1 >= self.detect_every:
            self.tracks = self._detect(rgb)
            self.frames_since_detection = 0
            self._force_detection = False
        else:
            self.tracks = self._follow(rgb)
            self.frames_since_detection += 1
        return sorted(self.tracks, key=lambda face: face.face_id)

    def _detect(self, rgb: np.ndarray) -> list[TrackedFace]:
        self.detections_run += 1
        faces = self.finder(rgb)
        matched = match_by_iou([track.box for track in self.tracks], [face.box for face in faces], self.min_iou)
        tracks = [
            TrackedFace(box=face.box, score=face.score, landmarks=face.landmarks, detected=True,
                        face_id=self.tracks[matched[j]].face_id if j in matched else self._new_id())
            for j, face in enumerate(faces)
        ]
        continued = set(matched.values())
        for index, track in enumerate(self.tracks):
            if index in continued or track.missed >= self.max_missed or track.landmarks is None:
                continue
            followed = self._follow_one(rgb, track)
            if followed is None:
                self._force_detection = True  # lost: detect again on the next frame
            elif max((box_iou(followed.box, t.box) for t in tracks), default=0) < self.min_iou:
                followed.missed = track.missed + 1
                tracks.append(followed)
        return tracks

    def _follow(self, rgb: np.ndarray) -> list[TrackedFace]:
        followed = []
        for track in self.tracks:
            face = self._follow_one(rgb, track)
            if face is None:
                self._force_detection = True  # the face left or changed: detect on the next frame
            else:
                followed.append(face)
        return followed

    def _follow_one(self, rgb: np.ndarray, track: TrackedFace) -> TrackedFace | None:
        """The track's face in this frame, found by its landmarks, or `None` if they say it is no longer there."""
        rgb = np.ascontiguousarray(rgb)
        height, width = rgb.shape[:2]
        box = _moved_box(track, self.finder.landmarker(rgb, track.box))
        box = (max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3]))
        if box[2] - box[0] < 8 or box[3] - box[1] < 8:
            return None
        # Landmarks fitted again in the moved box, which is where the face now is.
        landmarks = self.finder.landmarker(rgb, box)
        if implausible_landmarks(landmarks, box) is not None:
            return None
        if self.finder.landmarker.drift(rgb, box, landmarks) > self.finder.max_landmark_drift:
            return None
        return TrackedFace(box=box, score=track.score, landmarks=landmarks, face_id=track.face_id, detected=False,
                           missed=track.missed)


def _moved_box(track: DetectedFace, landmarks: np.ndarray) -> Box:
    """The track's box carried along with its landmarks: shifted by the move of their centre, scaled by the change of
    their spread (the root mean square distance from that centre)."""
    old = track.landmarks
    old_centre, new_centre = old.mean(axis=0), landmarks.mean(axis=0)
    old_spread = np.sqrt(((old - old_centre) ** 2).sum(axis=1).mean())
    new_spread = np.sqrt(((landmarks - new_centre) ** 2).sum(axis=1).mean())
    scale = float(np.clip(new_spread / max(old_spread, 1e-6), 0.8, 1.25))
    x0, y0, x1, y1 = track.box
    corners = (np.array([[x0, y0], [x1, y1]], dtype=np.float64) - old_centre) * scale + new_centre
    return tuple(int(round(value)) for value in corners.reshape(-1))  # type: ignore[return-value]


__all__ = ["DEFAULT_DETECT_EVERY", "FaceTracker", "TrackedFace", "box_iou", "match_by_iou"]

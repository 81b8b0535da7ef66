"""Face detection and cropping (`dataset_builders.faces`), and the crops a builder stores once while preparing."""

import sys

import numpy as np
import pytest
from disfa_fixture import write_disfa
from PIL import Image
from skimage.data import astronaut

from dataset_builders import build_dataset, facial_behavior_builder
from dataset_builders.faces import HaarFaceDetector, crop_face, expand_box

#: Where the astronaut's face is in `skimage.data.astronaut()` (512 x 512): x 177-272, y 66-161 by OpenCV's cascade.
ASTRONAUT_FACE_CENTRE = (224, 113)
FACE_FRAMES, BLANK_FRAMES = 3, 2
FRAME_SIZE = (256, 192)


@pytest.fixture(scope="module")
def detector():
    return HaarFaceDetector()


def test_haar_detector_finds_the_astronauts_face(detector):
    boxes = detector(astronaut())
    assert boxes, "no face found"
    x0, y0, x1, y1 = boxes[0]
    assert x0 < ASTRONAUT_FACE_CENTRE[0] < x1 and y0 < ASTRONAUT_FACE_CENTRE[1] < y1
    assert 60 <= x1 - x0 <= 160
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert areas == sorted(areas, reverse=True)


def test_expand_box_adds_the_margin_and_clips_to_the_image():
    assert expand_box((40, 40, 60, 60), 200, 200, 0.5) == (30, 30, 70, 70)
    # a tall box becomes a square around its centre
    assert expand_box((45, 40, 55, 60), 200, 200, 0.0) == (40, 40, 60, 60)
    assert expand_box((0, 0, 20, 10), 100, 50, 0.5) == (0, 0, 30, 25)
    assert expand_box((90, 40, 100, 50), 100, 50, 1.0) == (80, 30, 100, 50)


def test_crop_face_crops_the_largest_box_and_resizes():
    pixels = np.zeros((100, 100, 3), dtype=np.uint8)
    pixels[20:40, 30:50] = 255
    boxes = [(0, 0, 10, 10), (30, 20, 50, 40)]
    face = crop_face(Image.fromarray(pixels), lambda rgb: boxes[::-1], size=16, margin=0.0)
    assert face.size == (16, 16)
    assert np.asarray(face).min() == 255  # exactly the white square


def test_crop_face_is_none_without_a_face(detector):
    assert crop_face(Image.new("RGB", (200, 200), (128, 128, 128)), detector, size=64) is None
    face = crop_face(Image.fromarray(astronaut()), detector, size=64)
    assert face.size == (64, 64)


class CountingHaarFaceDetector(HaarFaceDetector):
    """The real detector, counting how often it is built and run."""

    constructed = 0
    calls = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        type(self).constructed += 1

    def __call__(self, rgb):
        type(self).calls += 1
        return super().__call__(rgb)


def face_or_blank(subject, camera, frame, size):
    """Frames 1-3: the astronaut (shifted a little per frame) on a grey frame; frames 4-5: grey only."""
    width, height = size
    rgb = np.full((height, width, 3), 90, dtype=np.uint8)
    if frame <= FACE_FRAMES:
        face = np.asarray(Image.fromarray(astronaut()).resize((height, height)))
        left = 16 * frame
        rgb[:, left : left + height] = face
    return rgb


@pytest.mark.parametrize("frames_dir", [None, "Frames"])
def test_crops_are_made_once_while_preparing_and_read_from_the_cache(tmp_path, monkeypatch, frames_dir):
    monkeypatch.setattr(facial_behavior_builder, "HaarFaceDetector", CountingHaarFaceDetector)
    monkeypatch.setattr(CountingHaarFaceDetector, "constructed", 0)
    monkeypatch.setattr(CountingHaarFaceDetector, "calls", 0)
    data = write_disfa(tmp_path / "disfa", cameras=("left",), num_frames=FACE_FRAMES + BLANK_FRAMES,
                       size=FRAME_SIZE, pixels=face_or_blank, write_videos=frames_dir is None,
                       write_frames=frames_dir is not None)
    arguments = dict(data_dir=str(data), cache_dir=str(tmp_path / "cache"), crop_faces=True, face_size=48,
                     frames_dir=frames_dir, return_report=True)

    splits, report = build_dataset("disfa", "fold1", **arguments)
    frames = 3 * (FACE_FRAMES + BLANK_FRAMES)
    assert CountingHaarFaceDetector.calls == frames and CountingHaarFaceDetector.constructed >= 1
    assert {name: len(split) for name, split in splits.items()} == {"train": 2 * FACE_FRAMES, "test": FACE_FRAMES}
    assert report.counts["no_face"] == 3 * BLANK_FRAMES
    assert all(image.size == (48, 48) for split in splits.values() for image in split["image"])
    # a crop holds the face, not the grey background
    assert np.asarray(splits["test"][0]["image"], dtype=np.float64).std() > 20

    constructed = CountingHaarFaceDetector.constructed
    cached, cached_report = build_dataset("disfa", "fold1", **arguments)
    assert (CountingHaarFaceDetector.constructed, CountingHaarFaceDetector.calls) == (constructed, frames)
    assert cached_report.counts == report.counts
    for name in splits:
        assert [np.asarray(i).tobytes() for i in cached[name]["image"]] == \
            [np.asarray(i).tobytes() for i in splits[name]["image"]]

    # another crop size is another prepared data set: the detector runs again
    resized, _ = build_dataset("disfa", "fold1", **{**arguments, "face_size": 64})
    assert CountingHaarFaceDetector.calls == 2 * frames
    assert resized["test"][0]["image"].size == (64, 64)


def test_an_opencv_without_haar_cascades_is_named_with_the_fix(monkeypatch):
    """OpenCV 5.x has no `CascadeClassifier` and no `cv2.data` (seen on a GPU machine with opencv-python-headless
    5.0.0): the detector says so and how to fix it, instead of a bare AttributeError. The stand-in module is what
    such an OpenCV offers here, where setup.cfg installs OpenCV 4."""
    import types

    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))
    sys.modules["cv2"].__version__ = "5.0.0"
    with pytest.raises(ImportError, match=r"OpenCV 5\.0\.0 lacks .*opencv-python-headless<5.*detect_faces=False"):
        HaarFaceDetector()

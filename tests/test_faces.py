"""Face detection, landmarks, false-positive rejection and alignment (`clef_hf.faces`, `clef_hf.face_alignment`) on
real photographs (`skimage.data`) and composites of them (`face_scenes`), and the crops a builder stores once while
preparing."""

import sys

import numpy as np
import pytest
from disfa_fixture import write_disfa
from face_scenes import ASTRONAUT_LANDMARKS, blank_canvas, paste_head, several_faces_scene, tilted_astronaut
from PIL import Image
from skimage.data import astronaut, chelsea, coffee, rocket
from skimage.registration import phase_cross_correlation

from clef_hf import faces as faces_module
from clef_hf.face_alignment import (FIVE_POINT_TEMPLATE, align_face, alignment_matrix, face_tilt_degrees,
                                    landmarks_in_crop, template_in_crop)
from clef_hf.faces import (DEFAULT_MAX_LANDMARK_DRIFT, DLIB_INSTALL_COMMAND, FaceFinder, FivePointLandmarker,
                           implausible_landmarks, make_face_detector)
from dataset_builders import build_dataset, facial_behavior_builder
from dataset_builders.faces import HaarFaceDetector, crop_face, expand_box

#: Photographs of `skimage.data` without a face.
FACE_FREE = {"cat": chelsea, "coffee": coffee, "rocket": rocket}

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


def test_crop_face_is_none_without_a_face(detector, hog):
    for finder in (detector, hog):
        assert crop_face(Image.new("RGB", (200, 200), (128, 128, 128)), finder, size=64) is None
        face = crop_face(Image.fromarray(astronaut()), finder, size=64)
        assert face.size == (64, 64)


# ---------------------------------------------------------------------------------------------------- dlib detectors


@pytest.fixture(scope="module")
def hog() -> FaceFinder:
    return FaceFinder("hog")


def _matching(face, placed):
    """The placed face nearest to a found face (by landmark centre)."""
    return min(placed, key=lambda p: np.linalg.norm(p.centre - face.landmarks.mean(axis=0)))


def _inside(landmarks, box) -> bool:
    x0, y0, x1, y1 = box
    return bool(((landmarks >= [x0, y0]) & (landmarks <= [x1, y1])).all())


@pytest.mark.parametrize("name", ["hog", "cnn"])
def test_dlib_detectors_find_the_astronaut_with_her_landmarks(name, hog):
    finder = hog if name == "hog" else FaceFinder("cnn", landmarker=hog.landmarker)
    found = finder(astronaut())
    assert len(found) == 1, found
    face = found[0]
    assert face.score > 0.5
    assert _inside(face.landmarks, face.box)
    # dlib's points on the same photograph, whichever detector gave the box
    np.testing.assert_allclose(face.landmarks, ASTRONAUT_LANDMARKS, atol=3)
    # dlib's order: the image-right eye (0, 1) right of the image-left eye (2, 3), outer corners outermost, nose low
    assert face.landmarks[0, 0] > face.landmarks[1, 0] > face.landmarks[3, 0] > face.landmarks[2, 0]
    assert face.landmarks[4, 1] > face.landmarks[:4, 1].max()


def test_several_faces_of_several_sizes_and_tilts_give_one_face_each(hog):
    canvas, placed = several_faces_scene()
    found = hog(canvas)
    assert len(found) == len(placed)
    assert len({id(_matching(face, placed)) for face in found}) == len(placed)  # one per placed face
    for face in found:
        reference = _matching(face, placed)
        assert _inside(face.landmarks, face.box)
        # within a few pixels of where the pasted photo's landmarks went (eye distances 35-62 px)
        assert np.abs(face.landmarks - reference.landmarks).max() < 4, (reference.scale, reference.angle)
        assert abs(face_tilt_degrees(face.landmarks) + reference.angle) < 4  # paste_head turns counter-clockwise
    assert [face.score for face in found] == sorted((face.score for face in found), reverse=True)


@pytest.mark.parametrize("photo", sorted(FACE_FREE))
def test_face_free_photos_give_no_face(hog, photo):
    assert hog(FACE_FREE[photo]()) == []


def test_landmarks_reject_what_a_lenient_detector_takes_for_faces(hog):
    """At a lower score threshold HOG finds 'faces' in the rocket photo and on the astronaut's suit; their landmarks
    follow the box instead of the image, so the finder drops them, and keeps the real face."""
    lenient = FaceFinder("hog", threshold=-0.5, landmarker=hog.landmarker, reject_implausible=False)
    strict = FaceFinder("hog", threshold=-0.5, landmarker=hog.landmarker)
    assert len(lenient(rocket())) >= 2 and strict(rocket()) == []
    assert len(lenient(astronaut())) >= 2 and len(strict(astronaut())) == 1
    face = strict(astronaut())[0]
    drift_on_face = hog.landmarker.drift(astronaut(), face.box)
    drifts_off_face = [hog.landmarker.drift(rocket(), f.box) for f in lenient(rocket())]
    assert drift_on_face < 0.05 < DEFAULT_MAX_LANDMARK_DRIFT < min(drifts_off_face)


def test_implausible_landmark_layouts_are_named():
    box = (0, 0, 100, 100)
    face = np.array([[80, 30], [62, 31], [20, 30], [38, 31], [50, 65]], dtype=float)
    assert implausible_landmarks(face, box) is None
    assert "outside" in implausible_landmarks(face + [40, 0], box)
    assert "apart" in implausible_landmarks(np.array([[51, 30], [50, 30], [49, 30], [50, 31], [50, 65]], float), box)
    assert "tilted" in implausible_landmarks(face[[2, 3, 0, 1, 4]], box)  # the eyes swapped: upside down
    nose_up = face.copy()
    nose_up[4] = [50, 20]  # above the eye line
    assert "nose" in implausible_landmarks(nose_up, box)


def test_a_callable_detector_keeps_its_boxes_and_gets_landmarks_inside_them(hog):
    finder = FaceFinder(lambda rgb: [(0, 0, 40, 40), (100, 50, 300, 250)], landmarker=hog.landmarker)
    found = finder(np.zeros((200, 200, 3), np.uint8))
    assert [face.box for face in found] == [(0, 0, 40, 40), (100, 50, 200, 200)]  # clipped to the image, kept
    assert all(_inside(face.landmarks, face.box) for face in found)


def test_a_missing_dlib_is_named_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
    for name in ("hog", "cnn"):
        with pytest.raises(ImportError, match=DLIB_INSTALL_COMMAND):
            make_face_detector(name)
    with pytest.raises(ImportError, match=r"face_detector='haar'"):
        FivePointLandmarker()
    # Haar needs no dlib: it finds the face, without landmarks
    monkeypatch.setattr(faces_module, "dlib_available", lambda: False)
    found = FaceFinder("haar")(astronaut())
    assert len(found) == 1 and found[0].landmarks is None


def test_missing_model_files_are_named_with_the_pip_command(monkeypatch):
    monkeypatch.setattr(faces_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=DLIB_INSTALL_COMMAND):
        faces_module.dlib_model_path("shape_predictor_5_face_landmarks.dat")


def test_unknown_detector_names_are_refused():
    with pytest.raises(ValueError, match=r"'retina'.*hog.*cnn.*haar"):
        make_face_detector("retina")


# ---------------------------------------------------------------------------------------------------- alignment


def test_the_template_is_dlibs_face_chip_geometry():
    """Fitting the astronaut's landmarks to the template gives the face square dlib's own `get_face_chip_details`
    computes for them (its rectangle (185.0, 85.7)-(264.6, 165.3), angle 0.048 rad)."""
    matrix = alignment_matrix(ASTRONAUT_LANDMARKS, crop_size=1, margin=0.0)
    corners = np.linalg.inv(matrix) @ np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=float).T
    centre = corners[:2].mean(axis=1)
    side = np.linalg.norm(corners[:2, 1] - corners[:2, 0])
    np.testing.assert_allclose(centre, [224.8, 125.5], atol=1.5)
    assert side == pytest.approx(79.6, abs=2.5)
    assert np.degrees(np.arctan2(*(corners[1::-1, 1] - corners[1::-1, 0]))) == pytest.approx(2.75, abs=1.0)
    # the margin shrinks the face square in the crop symmetrically
    np.testing.assert_allclose(template_in_crop(140, 0.2), (FIVE_POINT_TEMPLATE + 0.2) / 1.4 * 140)


@pytest.mark.parametrize("angle", [15.0, -15.0])
def test_aligned_crops_of_a_tilted_face_match_the_upright_crop(hog, angle):
    size = 112
    upright_image, _ = tilted_astronaut(0.0)
    tilted_image, _ = tilted_astronaut(angle)
    (upright,), (tilted,) = hog(upright_image), hog(tilted_image)
    assert abs(face_tilt_degrees(tilted.landmarks) + angle) < 4
    crops = [np.asarray(align_face(Image.fromarray(image), face.landmarks, size, 0.2), dtype=np.float64).mean(axis=2)
             for image, face in ((upright_image, upright), (tilted_image, tilted))]
    shift, _, _ = phase_cross_correlation(crops[0], crops[1], upsample_factor=10)
    assert np.abs(shift).max() < 2.0  # pixels of a 112 px crop
    assert np.abs(crops[0] - crops[1])[8:-8, 8:-8].mean() < 10  # grey levels, away from the warped border
    # the landmarks land on the template
    for face in (upright, tilted):
        mapped = landmarks_in_crop(face.landmarks, alignment_matrix(face.landmarks, size, 0.2))
        assert np.abs(mapped - template_in_crop(size, 0.2)).max() < 3
    # without alignment the box crops differ by far more: the test can tell
    box_crops = [np.asarray(Image.fromarray(image).crop(expand_box(face.box, 400, 400, 0.2)).resize((size, size)),
                            dtype=np.float64).mean(axis=2)
                 for image, face in ((upright_image, upright), (tilted_image, tilted))]
    assert np.abs(box_crops[0] - box_crops[1])[8:-8, 8:-8].mean() > 2 * np.abs(crops[0] - crops[1])[8:-8, 8:-8].mean()


def test_degenerate_landmarks_are_refused():
    with pytest.raises(ValueError, match="five finite"):
        alignment_matrix(np.zeros((4, 2)), 64, 0.2)
    with pytest.raises(ValueError, match="degenerate"):
        alignment_matrix(np.ones((5, 2)), 64, 0.2)


# ---------------------------------------------------------------------------------------------------- bad input


def test_tiny_and_huge_images(hog):
    assert hog(np.full((12, 15, 3), 128, np.uint8)) == []  # below the smallest face: nothing searched
    huge = blank_canvas(6000, 4000)
    placed = paste_head(huge, (3000, 2000), 8.0, 10.0)
    (face,) = hog(huge)
    assert _inside(face.landmarks, face.box)
    assert np.abs(face.landmarks - placed.landmarks).max() < 0.04 * 8 * 44  # 4% of its 350 px eye distance


def test_thirty_faces_in_one_frame(hog):
    canvas = blank_canvas(900, 750)
    for row in range(5):
        for column in range(6):
            paste_head(canvas, (75 + 150 * column, 75 + 150 * row), 0.7, 0.0)
    found = hog(canvas)
    assert len(found) == 30
    centres = sorted((round(float(f.landmarks[:, 1].mean()) // 150), round(float(f.landmarks[:, 0].mean()) // 150))
                     for f in found)
    assert centres == [(row, column) for row in range(5) for column in range(6)]


def test_detectors_refuse_arrays_dlib_cannot_take_with_a_clear_error(hog):
    for bad in (np.zeros((50, 50), np.uint8), np.zeros((50, 50, 3), np.uint16), np.zeros((50, 50, 4), np.uint8)):
        with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB array"):
            hog(bad)


class CountingFaceFinder(FaceFinder):
    """The real finder, counting how often it is built and run."""

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
    monkeypatch.setattr(facial_behavior_builder, "FaceFinder", CountingFaceFinder)
    monkeypatch.setattr(CountingFaceFinder, "constructed", 0)
    monkeypatch.setattr(CountingFaceFinder, "calls", 0)
    data = write_disfa(tmp_path / "disfa", cameras=("left",), num_frames=FACE_FRAMES + BLANK_FRAMES,
                       size=FRAME_SIZE, pixels=face_or_blank, write_videos=frames_dir is None,
                       write_frames=frames_dir is not None)
    arguments = dict(data_dir=str(data), cache_dir=str(tmp_path / "cache"), crop_faces=True, face_size=48,
                     frames_dir=frames_dir, return_report=True)

    splits, report = build_dataset("disfa", "fold1", **arguments)
    frames = 3 * (FACE_FRAMES + BLANK_FRAMES)
    assert CountingFaceFinder.calls == frames and CountingFaceFinder.constructed >= 1
    assert {name: len(split) for name, split in splits.items()} == {"train": 2 * FACE_FRAMES, "test": FACE_FRAMES}
    assert report.counts["no_face"] == 3 * BLANK_FRAMES
    assert all(image.size == (48, 48) for split in splits.values() for image in split["image"])
    # a crop holds the face, not the grey background
    assert np.asarray(splits["test"][0]["image"], dtype=np.float64).std() > 20

    constructed = CountingFaceFinder.constructed
    cached, cached_report = build_dataset("disfa", "fold1", **arguments)
    assert (CountingFaceFinder.constructed, CountingFaceFinder.calls) == (constructed, frames)
    assert cached_report.counts == report.counts
    for name in splits:
        assert [np.asarray(i).tobytes() for i in cached[name]["image"]] == \
            [np.asarray(i).tobytes() for i in splits[name]["image"]]

    # another crop size is another prepared data set: the detector runs again
    resized, _ = build_dataset("disfa", "fold1", **{**arguments, "face_size": 64})
    assert CountingFaceFinder.calls == 2 * frames
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


def test_builders_and_the_pipeline_crop_alike(hog):
    """`crop_face(..., align=True)`, which the builders call, is the pipeline's aligned crop of the best face."""
    image = Image.fromarray(astronaut())
    (face,) = hog(astronaut())
    aligned = crop_face(image, hog, size=64, margin=0.2, align=True)
    assert np.array_equal(np.asarray(aligned), np.asarray(align_face(image, face.landmarks, 64, 0.2)))
    boxed = crop_face(image, hog, size=64, margin=0.2, align=False)
    expected = image.crop(expand_box(face.box, 512, 512, 0.2)).resize((64, 64), Image.BILINEAR)
    assert np.array_equal(np.asarray(boxed), np.asarray(expected))

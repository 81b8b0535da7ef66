"""The `facial-behavior` pipeline (`clef_hf.pipeline_facial_behavior`): faces found in real photographs, every input
type and image mode, batching, AU / expression / zero-shot outputs, the speed options, and how `transformers.pipeline`
finds the task with and without the package installed."""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pytest
import torch
from conftest import IMAGE_SIZE, PROJECTION_DIM, tiny_text_config, tiny_vision_config
from PIL import Image
from face_scenes import several_faces_scene
from skimage.data import astronaut, chelsea, coffee, lfw_subset, rocket
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from clef_hf import CLEFConfig, CLEFModel, CLEFProcessor, FacialBehaviorPipeline, add_remote_pipeline
from clef_hf.face_alignment import align_face
from clef_hf.faces import HaarFaceDetector, expand_box
from clef_hf.image_inputs import load_rgb_image
from clef_hf.vocabulary import au_labels, expression_labels

#: The astronaut's face in `skimage.data.astronaut()` (512 x 512), as in tests/test_faces.py.
ASTRONAUT_FACE_CENTRE = (224, 113)


def _save_model(directory, tokenizer, task: str | None) -> str:
    labels = {"au": au_labels([1, 2, 4, 6, 12]), "expression": expression_labels(), None: {}}[task]
    config = CLEFConfig(vision_config=tiny_vision_config(), text_config=tiny_text_config(tokenizer),
                        projection_dim=PROJECTION_DIM, task=task, **labels)
    torch.manual_seed(0)
    model = CLEFModel(config)
    if task is not None:
        model.update_label_embeddings(tokenizer)
    model.save_pretrained(directory)
    CLEFProcessor.from_tokenizer(tokenizer, image_size=IMAGE_SIZE).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer) -> dict:
    root = tmp_path_factory.mktemp("pipeline-checkpoints")
    return {task or "none": _save_model(root / (task or "none"), tokenizer, task) for task in ("au", "expression", None)}


@pytest.fixture(scope="module")
def au_pipe(checkpoints) -> FacialBehaviorPipeline:
    return pipeline("facial-behavior", model=checkpoints["au"])


@pytest.fixture(scope="module")
def lfw_faces() -> list[np.ndarray]:
    """Eight pre-cropped 25 x 25 grayscale faces, float in [0, 1] (the first 100 of `lfw_subset` are faces)."""
    return list(lfw_subset()[:8])


@pytest.fixture(scope="module")
def two_faces() -> np.ndarray:
    """The astronaut's face pasted twice, side by side, on white: the Haar cascade finds both."""
    face = astronaut()[30:200, 140:310]
    image = np.full((240, 480, 3), 255, np.uint8)
    image[35:205, 30:200] = face
    image[35:205, 280:450] = face
    return image


def _scores(result: list) -> list[list[float]]:
    return [[prediction["score"] for prediction in face["predictions"]] for face in result]


def _assert_same_results(actual: list, expected: list, atol: float = 1e-5) -> None:
    assert len(actual) == len(expected)
    for faces, expected_faces in zip(actual, expected):
        assert [face["box"] for face in faces] == [face["box"] for face in expected_faces]
        assert [[p["label"] for p in face["predictions"]] for face in faces] == \
            [[p["label"] for p in face["predictions"]] for face in expected_faces]
        np.testing.assert_allclose(np.array(_scores(faces)).reshape(-1), np.array(_scores(expected_faces)).reshape(-1),
                                   atol=atol)


# ---------------------------------------------------------------------------------------------------- faces


def test_astronaut_one_face_with_au_scores_of_the_model(au_pipe):
    faces = au_pipe(astronaut())
    assert len(faces) == 1
    box = faces[0]["box"]
    assert set(box) == {"xmin", "ymin", "xmax", "ymax"}
    assert box["xmin"] < ASTRONAUT_FACE_CENTRE[0] < box["xmax"] and box["ymin"] < ASTRONAUT_FACE_CENTRE[1] < box["ymax"]
    assert 60 <= box["xmax"] - box["xmin"] <= 160

    config = au_pipe.model.config
    predictions = faces[0]["predictions"]
    assert [p["label"] for p in predictions] == config.label_ids == ["AU1", "AU2", "AU4", "AU6", "AU12"]
    assert [p["name"] for p in predictions] == config.label_names
    assert predictions[-1]["name"] == "lip corner puller"
    landmarks = np.array(faces[0]["landmarks"])
    assert landmarks.shape == (5, 2)
    assert (landmarks >= [box["xmin"], box["ymin"]]).all() and (landmarks <= [box["xmax"], box["ymax"]]).all()
    # The scores are sigmoid(CLEFModel logits) of the face aligned on its landmarks, with the default 0.2 margin, at
    # the image processor's crop size (the settings of a processor saved without face settings).
    image = Image.fromarray(astronaut())
    crop = align_face(image, landmarks, IMAGE_SIZE, 0.2)
    with torch.no_grad():
        logits = au_pipe.model(pixel_values=au_pipe.image_processor(crop, return_tensors="pt")["pixel_values"]).logits
    np.testing.assert_allclose([p["score"] for p in predictions], torch.sigmoid(logits[0]).numpy(), atol=1e-6)
    assert all(isinstance(p["present"], bool) and p["present"] == (p["score"] > config.au_threshold)
               for p in predictions)


def test_presence_follows_the_configured_threshold(au_pipe, lfw_faces):
    config = au_pipe.model.config
    default = config.au_threshold
    scores = np.array(_scores([faces[0] for faces in au_pipe(lfw_faces, detect_faces=False)]))
    threshold = float(np.median(scores))
    try:
        config.au_threshold = threshold
        results = au_pipe(lfw_faces, detect_faces=False)
    finally:
        config.au_threshold = default
    present = np.array([[p["present"] for p in faces[0]["predictions"]] for faces in results])
    np.testing.assert_array_equal(present, scores > threshold)
    assert 0 < present.sum() < present.size


def test_precropped_lfw_faces_without_detection(au_pipe, lfw_faces):
    results = au_pipe(lfw_faces, detect_faces=False)
    assert len(results) == len(lfw_faces)
    for faces in results:
        assert len(faces) == 1
        assert faces[0]["box"] == {"xmin": 0, "ymin": 0, "xmax": 25, "ymax": 25}
    assert len({tuple(scores) for faces in results for scores in _scores(faces)}) == len(lfw_faces)


def test_an_image_without_a_face_gives_an_empty_list(au_pipe):
    gray = np.full((200, 200, 3), 128, np.uint8)
    assert au_pipe(gray) == []
    results = au_pipe([gray, astronaut(), gray])
    assert [len(faces) for faces in results] == [0, 1, 0]


def test_two_faces_in_one_image(au_pipe, two_faces):
    faces = au_pipe(two_faces)
    assert len(faces) == 2
    left, right = sorted(faces, key=lambda face: face["box"]["xmin"])
    assert left["box"]["xmax"] < 240 < right["box"]["xmin"]
    # the same face twice: close scores (the boxes differ by a few pixels)
    np.testing.assert_allclose(_scores([left])[0], _scores([right])[0], atol=0.1)


def test_pluggable_face_detector_at_construction_and_per_call(checkpoints):
    image = np.zeros((100, 120, 3), np.uint8)
    pipe = pipeline("facial-behavior", model=checkpoints["au"], face_detector=lambda rgb: [(10, 20, 50, 60)])
    assert [face["box"] for face in pipe(image)] == [{"xmin": 10, "ymin": 20, "xmax": 50, "ymax": 60}]
    faces = pipe(image, face_detector=lambda rgb: np.array([[0, 0, 30, 30], [60, -5, 200, 40]]))
    # boxes are clipped to the image
    assert [face["box"] for face in faces] == [{"xmin": 0, "ymin": 0, "xmax": 30, "ymax": 30},
                                               {"xmin": 60, "ymin": 0, "xmax": 120, "ymax": 40}]
    with pytest.raises(ValueError, match=r"returned \(1, 2\)"):
        pipe(image, face_detector=lambda rgb: [(1, 2)])


def test_several_real_faces_give_one_entry_each_with_landmarks_in_its_box(au_pipe):
    canvas, placed = several_faces_scene()
    faces = au_pipe(canvas)
    assert len(faces) == len(placed)
    for face in faces:
        box, landmarks = face["box"], np.array(face["landmarks"])
        assert landmarks.shape == (5, 2)
        assert (landmarks >= [box["xmin"], box["ymin"]]).all() and (landmarks <= [box["xmax"], box["ymax"]]).all()
    found = sorted(tuple(np.array(face["landmarks"]).mean(axis=0).round(-1)) for face in faces)
    assert np.abs(np.array(found) - sorted(tuple(p.centre.round(-1)) for p in placed)).max() <= 10
    for photo in (chelsea(), coffee(), rocket()):
        assert au_pipe(photo) == []


def test_haar_box_crops_reproduce_the_pipeline_before_alignment(checkpoints):
    pipe = pipeline("facial-behavior", model=checkpoints["au"], face_detector="haar", align_faces=False)
    (face,) = pipe(astronaut())
    box = face["box"]
    assert (box["xmin"], box["ymin"], box["xmax"], box["ymax"]) == HaarFaceDetector()(astronaut())[0]
    image = Image.fromarray(astronaut())
    crop = image.crop(expand_box(tuple(box.values()), image.width, image.height, 0.2))
    with torch.no_grad():
        logits = pipe.model(pixel_values=pipe.image_processor(crop, return_tensors="pt")["pixel_values"]).logits
    np.testing.assert_allclose([p["score"] for p in face["predictions"]], torch.sigmoid(logits[0]).numpy(), atol=1e-6)
    # aligned and box crops of the same face give other scores: alignment changes what the model sees
    aligned = pipe(astronaut(), align_faces=True)[0]
    assert aligned["landmarks"] is not None
    assert not np.allclose(_scores([aligned]), _scores([face]), atol=1e-4)
    with pytest.raises(ValueError, match="face_detector must be one of"):
        pipe(astronaut(), face_detector="retina")


def test_face_settings_travel_with_the_checkpoint(tmp_path, tokenizer, checkpoints):
    directory = tmp_path / "haar-checkpoint"
    shutil.copytree(checkpoints["au"], directory)
    CLEFProcessor.from_tokenizer(tokenizer, image_size=IMAGE_SIZE, face_detector="haar", align_faces=False,
                                 face_margin=0.3, face_crop_size=48).save_pretrained(directory)
    reloaded = CLEFProcessor.from_pretrained(directory)
    assert (reloaded.image_processor.face_detector, reloaded.image_processor.align_faces,
            reloaded.image_processor.face_margin, reloaded.image_processor.face_crop_size) == ("haar", False, 0.3, 48)
    pipe = pipeline("facial-behavior", model=str(directory))
    assert pipe.face_settings == {"face_detector": "haar", "align_faces": False, "face_margin": 0.3,
                                  "face_crop_size": 48, "face_threshold": None}
    (face,) = pipe(astronaut())
    assert (face["box"]["xmin"], face["box"]["ymin"], face["box"]["xmax"], face["box"]["ymax"]) == \
        HaarFaceDetector()(astronaut())[0]
    # a processor config written before face settings existed loads with the defaults: HOG, aligned
    config_path = directory / "preprocessor_config.json"
    if not config_path.exists():
        config_path = directory / "processor_config.json"
    config = json.loads(config_path.read_text())
    for holder in (config, config.get("image_processor", {})):
        for key in ("face_detector", "align_faces", "face_margin", "face_crop_size", "face_threshold"):
            holder.pop(key, None)
    config_path.write_text(json.dumps(config))
    old = pipeline("facial-behavior", model=str(directory))
    assert old.face_settings == {"face_detector": "hog", "align_faces": True, "face_margin": 0.2,
                                 "face_crop_size": IMAGE_SIZE, "face_threshold": None}


def test_faces_found_elsewhere_are_scored_with_their_extra_keys(au_pipe):
    (detected,) = au_pipe(astronaut())
    given = {"box": detected["box"], "landmarks": detected["landmarks"], "face_id": 7}
    (face,) = au_pipe({"image": astronaut(), "faces": [given]})
    assert face["face_id"] == 7 and face["box"] == detected["box"]
    np.testing.assert_allclose(_scores([face]), _scores([detected]), atol=1e-6)
    # no landmarks: the box crop
    (boxed,) = au_pipe({"image": astronaut(), "faces": [{"box": (176, 77, 266, 166)}]})
    assert boxed["landmarks"] is None
    assert au_pipe({"image": astronaut(), "faces": []}) == []
    with pytest.raises(ValueError, match="five \\[x, y\\] points"):
        au_pipe({"image": astronaut(), "faces": [{"box": (0, 0, 50, 50), "landmarks": [[1, 2]]}]})
    with pytest.raises(ValueError, match="expected a dict with a 'box'"):
        au_pipe({"image": astronaut(), "faces": [(0, 0, 50, 50)]})


def test_bad_images_for_the_face_detector(au_pipe, tmp_path):
    """Grey, RGBA, 16-bit and EXIF-rotated photos of a face all give its face; a tiny image gives none."""
    expected = au_pipe(astronaut())[0]
    grey = np.asarray(Image.fromarray(astronaut()).convert("L"))
    rgba = np.dstack([astronaut(), np.full((512, 512), 255, np.uint8)])
    for name, image in {"grey": grey, "RGBA": rgba, "16-bit": astronaut().astype(np.uint16) * 257}.items():
        (face,) = au_pipe(image)
        np.testing.assert_allclose(face["landmarks"], expected["landmarks"], atol=3, err_msg=name)
    # a JPEG stored sideways whose EXIF says "rotate 90 degrees clockwise" (orientation 6): the face is found where
    # it is once the photo is upright
    sideways = Image.fromarray(astronaut()).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    sideways.save(path, exif=exif, quality=95)
    (face,) = au_pipe(str(path))
    np.testing.assert_allclose(face["landmarks"], expected["landmarks"], atol=3)
    assert au_pipe(np.full((15, 12, 3), 128, np.uint8)) == []


# ---------------------------------------------------------------------------------------------------- inputs


def test_every_input_type_gives_the_same_result(au_pipe, tmp_path):
    face = astronaut()[60:170, 170:280]  # a pre-cropped face, 110 x 110
    path = tmp_path / "face.png"
    Image.fromarray(face).save(path)
    expected = au_pipe(face, detect_faces=False)
    assert len(expected) == 1
    inputs = {
        "str path": str(path),
        "Path": path,
        "PIL": Image.fromarray(face),
        "uint16": face.astype(np.uint16) * 257,
        "float 0-1": face / 255.0,
        "float 0-255": face.astype(np.float32),
        "torch CHW": torch.from_numpy(face).permute(2, 0, 1),
        "datasets dict": {"bytes": path.read_bytes(), "path": None},
    }
    for name, image in inputs.items():
        faces = au_pipe(image, detect_faces=False)
        assert [face["box"] for face in faces] == [expected[0]["box"]], name
        np.testing.assert_allclose(_scores(faces), _scores(expected), atol=1e-6, err_msg=name)
    # a list returns a list of lists, a tuple too
    _assert_same_results(au_pipe(list(inputs.values()), detect_faces=False), [expected] * len(inputs), atol=1e-6)
    _assert_same_results(au_pipe((face, face), detect_faces=False), [expected] * 2, atol=1e-6)
    assert au_pipe([]) == []


def test_datasets_inputs(au_pipe, lfw_faces):
    images = [Image.fromarray(np.round(face * 255).astype(np.uint8)) for face in lfw_faces[:4]]
    expected = au_pipe(images, detect_faces=False)
    dataset = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 3]}).cast_column("image", datasets.Image())
    _assert_same_results(au_pipe(dataset["image"], detect_faces=False), expected)
    from_dataset = au_pipe(dataset, detect_faces=False, batch_size=3)
    assert isinstance(from_dataset, list)
    _assert_same_results(from_dataset, expected)
    streamed = au_pipe(dataset.to_iterable_dataset(), detect_faces=False)
    assert not isinstance(streamed, list)  # a lazy iterator for a streaming data set
    _assert_same_results(list(streamed), expected)
    with pytest.raises(ValueError, match=r"which column.*columns \['label'\]"):
        au_pipe(dataset.remove_columns("image"))


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(load_rgb_image(image)).astype(int)


def test_image_modes_become_rgb():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (16, 20), dtype=np.uint8)
    alpha = np.zeros((16, 20), np.uint8)
    alpha[:, 10:] = 255

    assert _rgb(Image.fromarray(rgb)).tolist() == rgb.tolist()
    assert (_rgb(Image.fromarray(gray)) == gray[..., None]).all()  # L: gray in all three channels
    # transparency is composited on white: transparent pixels white, opaque ones unchanged
    rgba = _rgb(Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA"))
    assert (rgba[:, :10] == 255).all() and (rgba[:, 10:] == rgb[:, 10:]).all()
    la = _rgb(Image.fromarray(np.dstack([gray, alpha]), mode="LA"))
    assert (la[:, :10] == 255).all() and (la[:, 10:] == gray[:, 10:, None]).all()
    half = _rgb(Image.fromarray(np.dstack([np.zeros_like(rgb), np.full_like(alpha, 128)]), mode="RGBA"))
    assert np.abs(half - 127).max() <= 1
    # palette images, with and without a transparent colour
    palette = Image.fromarray(rgb).quantize(colors=8)
    assert _rgb(palette).tolist() == np.asarray(palette.convert("RGB")).tolist()
    transparent = palette.copy()
    transparent.info["transparency"] = int(np.asarray(palette)[0, 0])
    assert (_rgb(transparent)[0, 0] == 255).all()
    assert np.abs(_rgb(Image.fromarray(rgb).convert("CMYK")) - rgb).max() <= 1
    # 16-bit, 32-bit integer and float gray images scale to 8 bits
    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    assert (_rgb(sixteen) == gray[..., None]).all()
    assert (_rgb(Image.fromarray(gray.astype(np.int32) * 257, mode="I")) == gray[..., None]).all()
    assert (_rgb(Image.fromarray(gray.astype(np.int32), mode="I")) == gray[..., None]).all()
    assert (_rgb(Image.fromarray(gray.astype(np.float32) / 255.0, mode="F")) == gray[..., None]).all()
    # arrays: (H, W, 4) uint8 and channels-first RGB
    assert (np.asarray(load_rgb_image(np.dstack([rgb, alpha])))[:, :10] == 255).all()
    assert np.asarray(load_rgb_image(np.moveaxis(rgb, -1, 0))).tolist() == rgb.tolist()
    with pytest.raises(ValueError, match="from -5 to 300"):
        load_rgb_image(np.array([[-5, 300]], dtype=np.int32))
    with pytest.raises(ValueError, match=r"shape \(4, 5, 7, 2\)"):
        load_rgb_image(np.zeros((4, 5, 7, 2), np.uint8))


def test_the_pipeline_runs_on_every_mode(au_pipe):
    base = Image.fromarray(astronaut()[60:170, 170:280])
    images = [base.convert(mode) for mode in ("RGB", "L", "RGBA", "CMYK", "P", "LA", "I", "F")]
    images.append(Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257))  # I;16
    results = au_pipe(images, detect_faces=False)
    assert [len(faces) for faces in results] == [1] * len(images)
    # RGB and CMYK round trips and the gray modes agree with each other
    np.testing.assert_allclose(_scores(results[0]), _scores(results[3]), atol=1e-2)
    for gray_result in results[6:]:
        np.testing.assert_allclose(_scores(gray_result), _scores(results[1]), atol=1e-2)


def test_unreadable_inputs_name_themselves(au_pipe, tmp_path):
    missing = tmp_path / "no-such-face.jpg"
    with pytest.raises(ValueError, match="no-such-face.jpg"):
        au_pipe(str(missing))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_text("not an image")
    with pytest.raises(ValueError, match="corrupt.png"):
        au_pipe([astronaut(), str(corrupt)])
    url = "http://127.0.0.1:9/face.png"  # nothing listens there (offline as well)
    with pytest.raises(ValueError, match=url):
        au_pipe(url, timeout=2)
    with pytest.raises(ValueError, match="Cannot read an image from a int"):
        au_pipe(42)


# ---------------------------------------------------------------------------------------------------- batching


def test_batches_give_the_same_results_and_really_batch(au_pipe, lfw_faces, two_faces):
    gray = np.full((120, 120, 3), 128, np.uint8)
    inputs = [astronaut(), gray, two_faces, gray, astronaut(), two_faces, gray]
    batch_sizes = []
    hook = au_pipe.model.vision_model.register_forward_hook(
        lambda module, args, kwargs, output: batch_sizes.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    try:
        one_at_a_time = au_pipe(inputs, batch_size=1)
        sizes_one = list(batch_sizes)
        batch_sizes.clear()
        batched = au_pipe(inputs, batch_size=4)
        sizes_four = list(batch_sizes)
    finally:
        hook.remove()
    assert [len(faces) for faces in one_at_a_time] == [1, 0, 2, 0, 1, 2, 0]
    _assert_same_results(batched, one_at_a_time)
    assert sizes_one == [1] * 6  # the faceless images never reach the model
    assert max(sizes_four) > 1 and sum(sizes_four) == 6
    # pre-cropped faces, 8 in batches of 4: two forward passes
    batch_sizes_precropped = []
    hook = au_pipe.model.vision_model.register_forward_hook(
        lambda module, args, kwargs, output: batch_sizes_precropped.append(kwargs["pixel_values"].shape[0]),
        with_kwargs=True,
    )
    try:
        au_pipe(lfw_faces, detect_faces=False, batch_size=4)
    finally:
        hook.remove()
    assert batch_sizes_precropped == [4, 4]


# ---------------------------------------------------------------------------------------------------- outputs


def test_expression_top_k_sorted_softmax(checkpoints, lfw_faces):
    pipe = pipeline("facial-behavior", model=checkpoints["expression"], detect_faces=False)
    config = pipe.model.config
    everything = pipe(lfw_faces[0])[0]["predictions"]
    assert sorted(p["label"] for p in everything) == sorted(config.label_ids)
    assert set(everything[0]) == {"label", "score"}
    scores = [p["score"] for p in everything]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
    pixel_values = pipe.image_processor(load_rgb_image(lfw_faces[0]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probabilities = torch.softmax(pipe.model(pixel_values=pixel_values.to(pipe.device)).logits[0], dim=-1).cpu()
    assert everything[0]["label"] == config.label_ids[int(probabilities.argmax())]
    np.testing.assert_allclose(scores, probabilities.sort(descending=True).values.numpy(), atol=1e-6)
    top3 = pipe(lfw_faces[0], top_k=3)[0]["predictions"]
    assert top3 == everything[:3]
    with pytest.raises(ValueError, match="top_k must be a positive integer, got 0"):
        pipe(lfw_faces[0], top_k=0)


def test_zero_shot_candidate_labels_are_encoded_once(au_pipe, checkpoints, lfw_faces):
    text_calls = []
    hook = au_pipe.model.text_model.register_forward_hook(lambda *args: text_calls.append(1))
    labels = ["lip corner puller with high intensity", "brow lowerer", "jaw drop"]
    try:
        first = au_pipe(lfw_faces[:2], detect_faces=False, candidate_labels=labels)
        assert len(text_calls) == 1
        second = au_pipe(lfw_faces[2:4], detect_faces=False, candidate_labels=labels)
        assert len(text_calls) == 1  # cached across calls
        au_pipe(lfw_faces[:1], detect_faces=False, candidate_labels=labels, hypothesis_template="a face showing {}.")
        assert len(text_calls) == 2  # another template is another entry
        au_pipe(lfw_faces[:1], detect_faces=False)
        assert len(text_calls) == 2  # the model's own labels come from the checkpoint's buffer
    finally:
        hook.remove()
    # an AU model scores each candidate on its own: sigmoid and presence, in the given order
    for faces in first + second:
        assert [p["label"] for p in faces[0]["predictions"]] == labels
        assert all(set(p) == {"label", "score", "present"} for p in faces[0]["predictions"])
    # the model's own label names, as candidates, give the model's own scores
    config = au_pipe.model.config
    own = au_pipe(lfw_faces[:2], detect_faces=False)
    as_candidates = au_pipe(lfw_faces[:2], detect_faces=False, candidate_labels=config.label_names)
    np.testing.assert_allclose(_scores(own[0]) + _scores(own[1]), _scores(as_candidates[0]) + _scores(as_candidates[1]),
                               atol=1e-5)
    # competing candidates: softmax, sorted
    single = au_pipe(lfw_faces[0], detect_faces=False, candidate_labels=labels, multi_label=False, top_k=2)
    assert len(single[0]["predictions"]) == 2 and single[0]["predictions"][0]["score"] >= 1 / 3 - 1e-6
    # a model without a label set needs candidates, and then ranks them with a softmax
    untrained = pipeline("facial-behavior", model=checkpoints["none"], detect_faces=False)
    with pytest.raises(ValueError, match="candidate_labels"):
        untrained(lfw_faces[0])
    ranked = untrained(lfw_faces[0], candidate_labels=labels)[0]["predictions"]
    assert sorted(p["label"] for p in ranked) == sorted(labels)
    assert abs(sum(p["score"] for p in ranked) - 1) < 1e-5


def test_bf16_autocast_and_int8_agree_with_float32(checkpoints, lfw_faces):
    reference = pipeline("facial-behavior", model=checkpoints["au"], detect_faces=False)
    base = np.array([scores for faces in reference(lfw_faces) for scores in _scores(faces)])
    threshold = float(np.median(base))  # a threshold where decisions are not all the same
    quantized = FacialBehaviorPipeline(model=reference.model, image_processor=reference.image_processor,
                                       detect_faces=False, quantize="int8")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    def quantized_layers(module: torch.nn.Module) -> int:
        return sum(isinstance(layer, DynamicQuantizedLinear) for layer in module.modules())

    assert quantized_layers(quantized.model.vision_model) == 2 * 6  # q, k, v, out, fc1, fc2 in each of 2 layers
    assert isinstance(quantized.model.visual_projection, DynamicQuantizedLinear)
    assert quantized_layers(quantized.model.text_model) == 0  # label texts stay exact
    assert quantized_layers(reference.model) == 0  # quantize="int8" quantizes a copy
    bfloat16 = pipeline("facial-behavior", model=checkpoints["au"], detect_faces=False, dtype=torch.bfloat16)
    assert bfloat16.model.dtype == torch.bfloat16
    for pipe, options in ((reference, {"autocast_bf16": True}), (quantized, {}), (bfloat16, {})):
        scores = np.array([s for faces in pipe(lfw_faces, batch_size=4, **options) for s in _scores(faces)])
        assert np.abs(scores - base).max() < 0.1
        assert ((scores > threshold) == (base > threshold)).mean() >= 0.8
    with pytest.raises(ValueError, match="quantize='int4'"):
        pipeline("facial-behavior", model=checkpoints["au"], quantize="int4")


# ---------------------------------------------------------------------------------------------------- registration


def test_the_task_is_registered_and_loads_without_trust_remote_code(checkpoints, tmp_path):
    assert "facial-behavior" in PIPELINE_REGISTRY.get_supported_tasks()
    assert isinstance(pipeline("facial-behavior", model=checkpoints["au"]), FacialBehaviorPipeline)

    # A checkpoint that carries the pipeline for remote-code users (custom_pipelines in config.json) still loads the
    # installed pipeline, without trust_remote_code ...
    shipped = tmp_path / "shipped"
    shutil.copytree(checkpoints["au"], shipped)
    copied = add_remote_pipeline(shipped)
    assert sorted(os.path.basename(path) for path in copied) == \
        ["face_alignment.py", "faces.py", "image_inputs.py", "pipeline_facial_behavior.py"]
    saved = json.loads((shipped / "config.json").read_text())
    assert saved["custom_pipelines"] == {"facial-behavior": {
        "impl": "pipeline_facial_behavior.FacialBehaviorPipeline", "pt": ["AutoModel"], "type": "image"}}
    pipe = pipeline("facial-behavior", model=str(shipped))
    assert type(pipe) is FacialBehaviorPipeline and type(pipe.model) is CLEFModel
    assert not hasattr(pipe.model.config, "custom_pipelines")  # CLEFConfig drops the entry of a registered task
    # ... which transformers alone would refuse: a config that keeps the entry demands trust_remote_code.
    config = CLEFConfig.from_pretrained(shipped)
    config.custom_pipelines = saved["custom_pipelines"]
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("facial-behavior", model=str(shipped), config=config)
    # transformers' own Pipeline.save_pretrained writes the same entry and code
    resaved = tmp_path / "resaved"
    pipe.save_pretrained(resaved)
    assert json.loads((resaved / "config.json").read_text())["custom_pipelines"]["facial-behavior"]["impl"] == \
        "pipeline_facial_behavior.FacialBehaviorPipeline"
    assert (resaved / "faces.py").is_file()
    assert isinstance(pipeline("facial-behavior", model=str(resaved)), FacialBehaviorPipeline)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="auto_map"):
        add_remote_pipeline(tmp_path / "plain")


def test_remote_code_users_get_the_pipeline_from_the_checkpoint(checkpoints, tmp_path):
    shipped = tmp_path / "shipped"
    shutil.copytree(checkpoints["au"], shipped)
    add_remote_pipeline(shipped)
    image = astronaut()
    np.save(tmp_path / "image.npy", image)
    expected = pipeline("facial-behavior", model=str(shipped))(image)
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["clef_hf"] = None  # as for a user who does not have the package
        sys.modules["dataset_builders"] = None
        import numpy as np
        from transformers import pipeline
        checkpoint = {str(shipped)!r}
        try:
            pipeline("facial-behavior", model=checkpoint)
        except ValueError as error:
            assert "trust_remote_code" in str(error), error
        else:
            raise AssertionError("loaded remote code without trust_remote_code")
        pipe = pipeline("facial-behavior", model=checkpoint, trust_remote_code=True)
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        assert type(pipe.model).__module__.startswith("transformers_modules"), type(pipe.model).__module__
        result = pipe(np.load({str(tmp_path / "image.npy")!r}))
        expected = json.load(open({str(tmp_path / "expected.json")!r}))
        assert [face["box"] for face in result] == [face["box"] for face in expected], result
        np.testing.assert_allclose([p["score"] for p in result[0]["predictions"]],
                                   [p["score"] for p in expected[0]["predictions"]], atol=1e-6)
        inferred = pipeline(model=checkpoint, trust_remote_code=True)  # the task comes from custom_pipelines
        assert inferred.task == "facial-behavior" and type(inferred).__name__ == "FacialBehaviorPipeline"
        print("REMOTE-PIPELINE-OK")
        """
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=300)
    assert "REMOTE-PIPELINE-OK" in result.stdout, result.stderr[-3000:]


def test_the_pipeline_code_does_not_depend_on_the_rest_of_the_package():
    import clef_hf.pipeline_facial_behavior as module

    directory = os.path.dirname(module.__file__)
    for name in ("pipeline_facial_behavior.py", "faces.py", "face_alignment.py", "image_inputs.py"):
        tree = ast.parse(open(os.path.join(directory, name), encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert node.module in ("faces", "face_alignment", "image_inputs"), (name, node.module)
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(m.startswith(("clef_hf", "dataset_builders")) for m in modules), (name, modules)

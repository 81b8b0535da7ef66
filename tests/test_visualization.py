"""`clef_hf.visualization`: results as DataFrames (one row per face) and a face crop beside its scores, from
hand-written pipeline results and, where the "facial-behavior" task is registered, from the real pipeline."""

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
from facial_behavior_fixture import build_facial_behavior_pipeline, facial_behavior_task_registered
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from clef_hf import CLEFModel
from clef_hf.visualization import (
    ABSENT_COLOR,
    PRESENT_COLOR,
    SCORE_COLOR,
    plot_face_scores,
    results_to_dataframe,
)

BOX = ["xmin", "ymin", "xmax", "ymax"]


def au_face(box, scores, threshold=0.5):
    names = {"AU1": "inner brow raiser", "AU2": "outer brow raiser", "AU12": "lip corner puller"}
    return {"box": dict(zip(BOX, box)),
            "predictions": [{"label": label, "name": names[label], "score": score, "present": score > threshold}
                            for label, score in scores.items()]}


def expression_face(box, scores):
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    return {"box": dict(zip(BOX, box)), "predictions": [{"label": label, "score": score} for label, score in ranked]}


FACE_A = au_face((10, 20, 50, 60), {"AU1": 0.1, "AU2": 0.7, "AU12": 0.9})
FACE_B = au_face((0, 0, 30, 30), {"AU1": 0.6, "AU2": 0.2, "AU12": 0.3})
FACE_C = au_face((40, 5, 64, 29), {"AU1": 0.05, "AU2": 0.95, "AU12": 0.5})


# ----------------------------------------------------------------------------------------------------------- tables


def test_one_images_au_faces_give_a_row_each_with_scores_and_presence():
    table = results_to_dataframe([FACE_A, FACE_B])
    assert list(table.columns) == ["image", "face", *BOX, "AU1", "AU2", "AU12",
                                   "AU1_present", "AU2_present", "AU12_present"]
    assert table["image"].tolist() == [0, 0] and table["face"].tolist() == [0, 1]
    assert table[BOX].values.tolist() == [[10, 20, 50, 60], [0, 0, 30, 30]]
    assert table[["AU1", "AU2", "AU12"]].values.tolist() == [[0.1, 0.7, 0.9], [0.6, 0.2, 0.3]]
    assert table[["AU1_present", "AU2_present", "AU12_present"]].values.tolist() == [[False, True, True],
                                                                                     [True, False, False]]
    assert table["AU12"].dtype == np.float64 and table["AU12_present"].dtype == bool
    assert table["face"].dtype == np.int64
    assert table.attrs["label_names"] == {"AU1": "inner brow raiser", "AU2": "outer brow raiser",
                                          "AU12": "lip corner puller"}


def test_a_batch_with_image_ids_skips_or_keeps_images_without_faces():
    results = [[FACE_A], [], [FACE_B, FACE_C]]
    table = results_to_dataframe(results, image_ids=["a.jpg", "b.jpg", "c.jpg"])
    assert table["image"].tolist() == ["a.jpg", "c.jpg", "c.jpg"]
    assert table["face"].tolist() == [0, 0, 1]
    assert table["AU2"].tolist() == [0.7, 0.2, 0.95]
    assert table["xmin"].tolist() == [10, 0, 40]

    kept = results_to_dataframe(results, image_ids=["a.jpg", "b.jpg", "c.jpg"], keep_empty=True)
    assert kept["image"].tolist() == ["a.jpg", "b.jpg", "c.jpg", "c.jpg"]
    empty = kept.iloc[1]
    assert empty["face"] is pd.NA and math.isnan(empty["AU1"]) and math.isnan(empty["xmin"])
    assert empty["AU1_present"] is pd.NA
    assert kept["face"].dtype == "Int64" and kept["AU1_present"].dtype == "boolean"
    assert kept["AU2_present"].tolist()[2:] == [False, True]

    default_ids = results_to_dataframe(results)
    assert default_ids["image"].tolist() == [0, 2, 2]


def test_no_face_at_all_gives_an_empty_table_with_the_columns():
    table = results_to_dataframe([])  # what pipe(image) returns without a face
    assert table.empty and list(table.columns) == ["image", "face", *BOX]
    assert results_to_dataframe([], keep_empty=True)["image"].tolist() == [0]
    assert results_to_dataframe([], image_ids=[], keep_empty=True).empty  # pipe([]): no image at all
    assert results_to_dataframe([[], []], keep_empty=True)["image"].tolist() == [0, 1]
    labelled = results_to_dataframe([[]], labels=["AU1", "AU12"])
    assert labelled.empty and list(labelled.columns) == ["image", "face", *BOX, "AU1", "AU12"]


def test_expression_top_k_results_have_score_columns_with_gaps_and_no_presence():
    results = [[expression_face((0, 0, 10, 10), {"happiness": 0.7, "surprise": 0.2})],
               [expression_face((0, 0, 10, 10), {"anger": 0.5, "happiness": 0.3})]]
    table = results_to_dataframe(results)
    assert list(table.columns) == ["image", "face", *BOX, "happiness", "surprise", "anger"]  # first appearance
    assert table["happiness"].tolist() == [0.7, 0.3]
    assert table["surprise"].iloc[0] == 0.2 and math.isnan(table["surprise"].iloc[1])
    assert math.isnan(table["anger"].iloc[0]) and table["anger"].iloc[1] == 0.5
    assert "label_names" not in table.attrs

    ordered = results_to_dataframe(results, labels=["neutral", "anger", "happiness"])
    assert list(ordered.columns)[6:] == ["neutral", "anger", "happiness", "surprise"]
    assert ordered["neutral"].isna().all() and ordered["neutral"].dtype == np.float64


def test_video_records_give_frame_and_timestamp_instead_of_image():
    records = [{"frame": 0, "timestamp": 0.0, "faces": [FACE_A]},
               {"frame": 5, "timestamp": 0.5, "faces": []},
               {"frame": 10, "timestamp": 1.0, "faces": [FACE_B, FACE_C]}]
    table = results_to_dataframe(iter(records))  # any iterable, e.g. analyze_video's generator
    assert list(table.columns)[:7] == ["frame", "timestamp", "face", *BOX]
    assert "image" not in table.columns
    assert table["frame"].tolist() == [0, 10, 10] and table["timestamp"].tolist() == [0.0, 1.0, 1.0]
    assert table["face"].tolist() == [0, 0, 1]
    assert table["AU12"].tolist() == [0.9, 0.3, 0.5]
    assert results_to_dataframe(records, keep_empty=True)["frame"].tolist() == [0, 5, 10, 10]
    assert results_to_dataframe(records[0])["frame"].tolist() == [0]  # a single record
    with pytest.raises(ValueError, match="image_ids"):
        results_to_dataframe(records, image_ids=["x", "y", "z"])
    with pytest.raises(ValueError, match="'timestamp'"):
        results_to_dataframe([{"frame": 0, "faces": []}])


@pytest.mark.parametrize("results, error, message", [
    ("AU12", TypeError, "got a str"),
    ({"box": {}, "predictions": []}, TypeError, "analyze_video records"),
    ([[FACE_A], "oops"], TypeError, r"results\[1\] is a str"),
    ([FACE_A, [FACE_B]], TypeError, r"results\[0\] is a dict"),
    ([[FACE_A], [{"predictions": []}]], ValueError, r"results\[1\]\[0\] has no box"),
    ([[FACE_A, {"box": FACE_A["box"]}]], TypeError, r"results\[0\]\[1\] is a dict with keys \['box'\]"),
    ([[{"box": FACE_A["box"], "predictions": [{"label": "AU1"}]}]], ValueError,
     r"results\[0\]\[0\]\['predictions'\]\[0\] needs 'label' and 'score'"),
    ([{"frame": 0, "timestamp": 0.0, "faces": "none"}], TypeError, r"results\[0\]\['faces'\] is a str"),
])
def test_malformed_results_are_reported_where_they_are(results, error, message):
    with pytest.raises(error, match=message):
        results_to_dataframe(results)


def test_image_ids_must_match_the_images():
    with pytest.raises(ValueError, match="2 image_ids for 3 images"):
        results_to_dataframe([[FACE_A], [], [FACE_B]], image_ids=["a", "b"])


# ---------------------------------------------------------------------------------------------------------- figures


def marked_image(size=(80, 70)):
    """A noise image, so that a crop's pixels tell exactly which region of it was shown."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def bars_of(axes):
    return [patch for patch in axes.patches if patch.get_label() not in ("present", "absent")]


def test_plot_shows_the_crop_beside_au_bars_coloured_by_presence():
    image = marked_image()
    figure = plot_face_scores(image, FACE_A)
    assert isinstance(figure, Figure)
    crop_ax, bar_ax = figure.axes
    shown = np.asarray(crop_ax.images[0].get_array())
    np.testing.assert_array_equal(shown, np.asarray(image)[20:60, 10:50])
    bars = bars_of(bar_ax)
    assert [bar.get_width() for bar in bars] == pytest.approx([0.1, 0.7, 0.9])
    assert [bar.get_facecolor() for bar in bars] == [to_rgba(ABSENT_COLOR), to_rgba(PRESENT_COLOR),
                                                     to_rgba(PRESENT_COLOR)]
    ticks = [tick.get_text() for tick in bar_ax.get_yticklabels()]
    assert ticks == ["AU1 inner brow raiser", "AU2 outer brow raiser", "AU12 lip corner puller"]
    assert bar_ax.yaxis_inverted()  # the first AU on top
    assert bar_ax.get_xlim() == (0.0, 1.0)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")  # renders headless, without pyplot
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_top_k_shows_the_highest_scores_first():
    figure = plot_face_scores(marked_image(), FACE_C, top_k=2)
    bars = bars_of(figure.axes[1])
    assert [bar.get_width() for bar in bars] == pytest.approx([0.95, 0.5])
    assert [tick.get_text().split()[0] for tick in figure.axes[1].get_yticklabels()] == ["AU2", "AU12"]


def test_plot_expression_scores_in_one_colour():
    face = expression_face((0, 0, 40, 40), {"happiness": 0.6, "neutral": 0.3, "anger": 0.1})
    figure = plot_face_scores(np.asarray(marked_image()), face)  # an RGB array works too
    bars = bars_of(figure.axes[1])
    assert [bar.get_width() for bar in bars] == pytest.approx([0.6, 0.3, 0.1])
    assert {bar.get_facecolor() for bar in bars} == {to_rgba(SCORE_COLOR)}
    assert [tick.get_text() for tick in figure.axes[1].get_yticklabels()] == ["happiness", "neutral", "anger"]
    assert figure.axes[1].get_legend() is None


def test_plot_into_given_axes_and_from_a_path(tmp_path):
    image = marked_image()
    path = tmp_path / "frame.png"
    image.save(path)
    figure = Figure()
    crop_ax, bar_ax = figure.subplots(1, 2)
    assert plot_face_scores(path, FACE_A, ax=(crop_ax, bar_ax)) is figure
    np.testing.assert_array_equal(np.asarray(crop_ax.images[0].get_array()), np.asarray(image)[20:60, 10:50])
    assert len(bars_of(bar_ax)) == 3

    single = Figure().add_subplot()
    assert plot_face_scores(image, FACE_A, ax=single) is single.figure
    assert len(bars_of(single)) == 3 and len(single.figure.axes) == 1  # bars only


def test_plot_crops_fractional_boxes_outward_and_clips_to_the_image():
    image = marked_image()
    face = {**FACE_A, "box": {"xmin": 10.4, "ymin": -5, "xmax": 49.2, "ymax": 500}}
    shown = np.asarray(plot_face_scores(image, face).axes[0].images[0].get_array())
    np.testing.assert_array_equal(shown, np.asarray(image)[0:70, 10:50])


@pytest.mark.parametrize("face, kwargs, error, message", [
    ({**FACE_A, "box": {"xmin": 100, "ymin": 100, "xmax": 120, "ymax": 120}}, {}, ValueError, "outside the 80 x 70"),
    ({"box": FACE_A["box"], "predictions": []}, {}, ValueError, "no predictions"),
    ([FACE_A], {}, TypeError, "pass faces\\[i\\]"),
    (FACE_A, {"top_k": 0}, ValueError, "top_k"),
    (FACE_A, {"ax": "left"}, TypeError, "pair of Axes"),
])
def test_plot_rejects_what_it_cannot_draw(face, kwargs, error, message):
    with pytest.raises(error, match=message):
        plot_face_scores(marked_image(), face, **kwargs)


def test_plot_names_a_missing_image_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        plot_face_scores(tmp_path / "missing.png", FACE_A)


# ----------------------------------------------------------------------------------------- with the real pipeline


requires_pipeline = pytest.mark.skipif(
    not facial_behavior_task_registered(),
    reason="the 'facial-behavior' pipeline task is not registered by clef_hf (clef_hf/pipeline_facial_behavior.py)",
)

#: Two "faces" in the first image, none in the second: a stand-in detector, so no real face is needed.
FACE_BOXES = [(2, 4, 30, 36), (34, 10, 62, 40)]


def two_faces_then_none(rgb: np.ndarray):
    return FACE_BOXES if rgb.mean() > 10 else []


@requires_pipeline
def test_au_pipeline_results_tabulate_and_plot(au_model, processor, tmp_path):
    pipe = build_facial_behavior_pipeline(au_model, processor, tmp_path / "model")
    image = marked_image(size=(64, 48))
    blank = Image.new("RGB", (64, 48))
    results = pipe([image, blank], batch_size=2, face_detector=two_faces_then_none)
    assert len(results) == 2 and len(results[0]) == 2 and results[1] == []

    table = results_to_dataframe(results, image_ids=["noise", "blank"])
    labels = list(au_model.config.label_ids)
    assert list(table.columns) == ["image", "face", *BOX, *labels, *[f"{label}_present" for label in labels]]
    assert table["image"].tolist() == ["noise", "noise"] and table["face"].tolist() == [0, 1]
    assert table[BOX].values.tolist() == [list(box) for box in FACE_BOXES]
    for row, face in zip(table.itertuples(index=False), results[0]):
        row = row._asdict()
        for prediction in face["predictions"]:
            assert row[prediction["label"]] == pytest.approx(prediction["score"])
            assert row[prediction["label"] + "_present"] == prediction["present"]
    assert table.attrs["label_names"]["AU12"] == "lip corner puller"
    assert results_to_dataframe(results, keep_empty=True)["image"].tolist() == [0, 0, 1]

    face = results[0][1]
    figure = plot_face_scores(image, face)
    x0, y0, x1, y1 = FACE_BOXES[1]
    np.testing.assert_array_equal(np.asarray(figure.axes[0].images[0].get_array()), np.asarray(image)[y0:y1, x0:x1])
    bars = bars_of(figure.axes[1])
    assert [bar.get_width() for bar in bars] == pytest.approx([p["score"] for p in face["predictions"]])
    assert [bar.get_facecolor() for bar in bars] == [to_rgba(PRESENT_COLOR if p["present"] else ABSENT_COLOR)
                                                     for p in face["predictions"]]


@requires_pipeline
def test_expression_pipeline_results_tabulate_and_plot(make_config, tokenizer, processor, tmp_path):
    torch.manual_seed(0)
    model = CLEFModel(make_config("expression"))
    model.update_label_embeddings(tokenizer)
    pipe = build_facial_behavior_pipeline(model.eval(), processor, tmp_path / "model")
    images = [marked_image(size=(40, 40)), Image.new("RGB", (40, 40), (200, 30, 30))]
    results = pipe(images, detect_faces=False, top_k=3)
    labels = list(model.config.label_ids)

    table = results_to_dataframe(results, labels=labels)
    assert list(table.columns) == ["image", "face", *BOX, *labels]  # no presence columns for expressions
    assert len(table) == 2
    assert table[labels].notna().sum(axis=1).tolist() == [3, 3]  # top_k=3 of each face
    for row, faces in zip(table.itertuples(index=False), results):
        row = row._asdict()
        assert [row[p["label"]] for p in faces[0]["predictions"]] == pytest.approx(
            [p["score"] for p in faces[0]["predictions"]])

    figure = plot_face_scores(images[0], results[0][0], top_k=2)
    bars = bars_of(figure.axes[1])
    assert [bar.get_width() for bar in bars] == pytest.approx([p["score"] for p in results[0][0]["predictions"][:2]])

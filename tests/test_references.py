"""The classical reference rows (`clef_hf.training.references`) on real synthetic faces: held-out subjects, C chosen
on the validation split only, unknown AU labels left out, bad input named."""

import datasets
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clef_hf.training.initialization import labels_of_split
from clef_hf.training.references import (
    DEFAULT_C_GRID,
    HOG_ROW,
    PIXELS_ROW,
    classical_references,
    fit_path,
    fit_task,
    grey_images,
    hog_features,
    predict_task,
    standardised,
)
from dataset_builders import build_dataset

SIZE = 64  # HOG's 8-pixel cells need room: at 32 px a face is 4x4 cells


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict[str, datasets.Dataset]:
    """synthfaces, subject-exclusive: 4 training subjects, 1 validation subject (cut from the builder's train split),
    2 test subjects; 3 frames per task, 64 px: 96 / 24 / 48 images."""
    splits = build_dataset("synthfaces", cache_dir=str(tmp_path_factory.mktemp("faces")), num_subjects=7,
                           num_test_subjects=2, frames_per_activity=3, image_size=SIZE)
    held_out = sorted(set(splits["train"]["subject"]))[-1]
    return {
        "train": splits["train"].filter(lambda subject: subject != held_out, input_columns="subject"),
        "validation": splits["train"].filter(lambda subject: subject == held_out, input_columns="subject"),
        "test": splits["test"],
    }


def references(faces: dict, task: str, **replaced) -> dict:
    splits = {**faces, **replaced}
    label_ids = labels_of_split(faces["train"], task)["label_ids"]
    return classical_references(splits["train"], splits["validation"], splits["test"], task, label_ids)


def with_labels(split: datasets.Dataset, column: str, values: list) -> datasets.Dataset:
    """`split` with `column` replaced by `values`, its feature (e.g. the ClassLabel) kept."""
    return split.map(lambda row, index: {column: values[index]}, with_indices=True)


@pytest.mark.parametrize("task, key", [("au", "mean_f1"), ("expression", "accuracy")])
def test_hog_beats_the_trivial_baseline_on_held_out_subjects(faces, task, key):
    result = references(faces, task)
    assert result["num_images"] == {"train": 96, "validation": 24, "test": 48}
    assert result["selection_metric"] == key and set(result["rows"]) == {PIXELS_ROW, HOG_ROW}
    hog_row = result["rows"][HOG_ROW]
    assert hog_row["num_features"] == 7 * 7 * 2 * 2 * 9  # 8x8 cells of 8 px, 7x7 blocks of 2x2 cells, 9 bins
    assert hog_row["test"][key] > result["test_baseline"][key] + 0.1
    for row in result["rows"].values():
        assert row["C"] in DEFAULT_C_GRID and list(row["validation_by_C"]) == [str(C) for C in DEFAULT_C_GRID]
        assert row["validation"][key] == row["validation_by_C"][str(row["C"])] == max(row["validation_by_C"].values())
        if task == "au":  # the project's metric, per AU, keyed by the label ids
            assert list(row["test"]["per_label_f1"]) == labels_of_split(faces["train"], "au")["label_ids"]
            assert row["test"]["mean_f1"] == pytest.approx(np.mean(row["test"]["f1"]))


def hog_of(faces: dict) -> dict[str, np.ndarray]:
    """The HOG row's standardised features of each split, as `classical_references` computes them."""
    return standardised({name: hog_features(grey_images(split, (SIZE, SIZE))) for name, split in faces.items()})


def test_C_follows_the_validation_split(faces):
    """Relabel the validation images with what the classifier at one C predicts: that C scores 1.0 there and is
    chosen (the first such C of the grid, on ties), whichever C it is; the test split is the same every time."""
    features = hog_of(faces)
    train_labels = np.asarray(faces["train"]["expression"])
    path = fit_task(features["train"], train_labels, "expression", DEFAULT_C_GRID)
    chosen = set()
    for C, classifiers in zip(DEFAULT_C_GRID, path):
        relabelled = predict_task(classifiers, features["validation"], "expression").tolist()
        row = references(faces, "expression", validation=with_labels(faces["validation"], "expression",
                                                                     relabelled))["rows"][HOG_ROW]
        assert row["validation_by_C"][str(C)] == 1.0
        assert row["C"] == next(c for c in DEFAULT_C_GRID if row["validation_by_C"][str(c)] == 1.0)
        chosen.add(row["C"])
    assert len(chosen) > 1, "every C predicted the same validation labels: the test shows nothing"


def test_the_test_split_does_not_take_part_in_the_choice(faces):
    """Scrambling the test labels changes the test metrics and nothing else."""
    result = references(faces, "expression")
    scrambled = np.random.default_rng(0).permutation(faces["test"]["expression"]).tolist()
    scrambled_result = references(faces, "expression", test=with_labels(faces["test"], "expression", scrambled))
    for name in (PIXELS_ROW, HOG_ROW):
        row, other = result["rows"][name], scrambled_result["rows"][name]
        assert (other["C"], other["validation_by_C"], other["validation"]) == (
            row["C"], row["validation_by_C"], row["validation"])
    assert result["rows"][HOG_ROW]["test"]["accuracy"] != scrambled_result["rows"][HOG_ROW]["test"]["accuracy"]


def test_unknown_au_labels_are_left_out_of_training(faces):
    """An AU's -1 rows are not a third class: its classifiers are those fitted on its known rows alone."""
    features = hog_of(faces)["train"]
    labels = np.asarray(faces["train"]["au"])
    unknown = np.arange(len(labels)) % 3 == 0
    labels[unknown, 0] = -1
    path = fit_task(features, labels, "au", DEFAULT_C_GRID)
    expected = fit_path(features[~unknown], labels[~unknown, 0], DEFAULT_C_GRID)
    for classifiers, reference in zip(path, expected):
        assert isinstance(classifiers[0], LogisticRegression) and classifiers[0].classes_.tolist() == [0, 1]
        np.testing.assert_array_equal(classifiers[0].coef_, reference.coef_)


def test_an_au_never_known_in_training_is_predicted_absent_and_unknown_test_labels_are_ignored(faces):
    train_labels = np.asarray(faces["train"]["au"])
    test_labels = np.asarray(faces["test"]["au"])
    au = int(np.argmax((test_labels == 1).sum(0)))  # an AU present in the test split
    train_labels[:, au] = -1
    test_labels[: len(test_labels) // 2, au] = -1
    result = references(faces, "au", train=with_labels(faces["train"], "au", train_labels.tolist()),
                        test=with_labels(faces["test"], "au", test_labels.tolist()))
    au_id = labels_of_split(faces["train"], "au")["label_ids"][au]
    for row in result["rows"].values():
        assert row["test"]["per_label_f1"][au_id] == 0.0  # never predicted, yet present
        assert row["test"]["support"][au] == int((test_labels[:, au] == 1).sum())  # the -1 rows not counted


def test_bad_input_is_named(faces):
    with pytest.raises(ValueError, match=r"'validation' split has no column \['expression'\]"):
        references(faces, "expression", validation=faces["validation"].remove_columns("expression"))
    with pytest.raises(ValueError, match=r"'test' split has no column \['image'\]"):
        references(faces, "au", test=faces["test"].remove_columns("image"))
    with pytest.raises(ValueError, match="task must be 'au' or 'expression'"):
        classical_references(faces["train"], faces["validation"], faces["test"], "activity", ["AU1"])
    with pytest.raises(ValueError, match="label_ids has 2"):
        classical_references(faces["train"], faces["validation"], faces["test"], "au", ["AU1", "AU2"])
    with pytest.raises(ValueError, match="C_grid"):
        classical_references(faces["train"], faces["validation"], faces["test"], "au", ["AU1"], C_grid=(0.0,))

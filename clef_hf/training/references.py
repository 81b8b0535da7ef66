"""Classical reference classifiers: logistic regression on raw grey pixels and on HOG descriptors, the rows a CLEF
model is compared with besides the trivial baseline.

Both rows follow the protocol of fine-tuning: fit on the training split, choose the regularisation strength C on the
validation split by the task's selection metric (mean AU F1 or accuracy, [`~training.evaluation.BEST_METRIC`]),
then score the test split once, with the chosen C. The metrics are the project's own (`clef_hf.metrics`), so the
numbers sit in the same table as the CLEF rows.

    from clef_hf.training.references import classical_references
    table = classical_references(splits["train"], splits["validation"], splits["test"], "au", au_ids)
    table["rows"]["logistic regression on HOG"]["test"]["mean_f1"]

The classifiers are scikit-learn's `LogisticRegression` with `class_weight="balanced"` (AUs are rare, and the
balanced weights play the part of CLEF's class weights): one binary classifier per AU, trained on the frames where
that AU is known (labels of -1 are left out), or one multinomial classifier over the expression classes.
"""

import copy
import warnings

import datasets
import numpy as np
from PIL import Image
from skimage.feature import hog
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .data import get_split
from .evaluation import BEST_METRIC, baseline_metrics, prediction_metrics

#: The regularisation strengths tried on the validation split (scikit-learn's C: larger is less regularised).
DEFAULT_C_GRID = (0.01, 0.05, 0.2, 1.0)
#: HOG as Dalal and Triggs: 9 unsigned orientations, 8x8-pixel cells, blocks of 2x2 cells, L2-Hys normalisation.
HOG_OPTIONS = {"orientations": 9, "pixels_per_cell": (8, 8), "cells_per_block": (2, 2), "block_norm": "L2-Hys"}
#: lbfgs iterations per fit (a fit that stops before meeting its tolerance is reported in the row's `converged`).
MAX_ITER = 300
#: The rows of the table, by name: the features each classifier sees.
PIXELS_ROW = "logistic regression on pixels"
HOG_ROW = "logistic regression on HOG"


def grey_images(split: datasets.Dataset, image_size: tuple[int, int]) -> np.ndarray:
    """(n, height, width) float32 grey levels in [0, 1] of the split's `image` column, resized to `image_size`
    (width, height) where they differ."""
    images = []
    for image in split.select_columns(["image"])["image"]:
        grey = image.convert("L")
        if grey.size != image_size:
            grey = grey.resize(image_size, Image.BILINEAR)
        images.append(np.asarray(grey, dtype=np.float32) / 255.0)
    return np.stack(images)


def pixel_features(images: np.ndarray) -> np.ndarray:
    """(n, height * width) raw grey pixels of (n, height, width) images."""
    return images.reshape(len(images), -1)


def hog_features(images: np.ndarray) -> np.ndarray:
    """(n, d) HOG descriptors (`HOG_OPTIONS`) of (n, height, width) images; d = 1764 for 64x64 images."""
    return np.stack([hog(image, feature_vector=True, **HOG_OPTIONS) for image in images]).astype(np.float32)


def standardised(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each split's (n, d) features scaled to zero mean and unit variance with the `train` split's statistics."""
    scaler = StandardScaler().fit(features["train"])
    return {name: scaler.transform(values) for name, values in features.items()}


def label_array(split: datasets.Dataset, task: str, label_ids: list[str], name: str) -> np.ndarray:
    """The split's labels: (n, num_aus) in {1, 0, -1} for AUs, (n,) class indices for expressions, checked against
    `label_ids`."""
    labels = np.asarray(list(split.select_columns([task])[task]), dtype=np.int64)
    if task == "au":
        if labels.ndim != 2 or labels.shape[1] != len(label_ids):
            raise ValueError(f"The {name} split's au column has rows of {labels.shape[1:]} labels; label_ids has "
                             f"{len(label_ids)}.")
        if not np.isin(labels, (-1, 0, 1)).all():
            raise ValueError(f"The {name} split's au column holds values outside 1, 0, -1 (unknown).")
    elif labels.min() < 0 or labels.max() >= len(label_ids):
        raise ValueError(f"The {name} split's expression column holds classes outside 0..{len(label_ids) - 1} "
                         f"(label_ids has {len(label_ids)}).")
    return labels


def fit_path(features: np.ndarray, labels: np.ndarray, C_grid: tuple[float, ...]) -> list:
    """Classifiers of (n, d) features and (n,) labels, one per strength of `C_grid`, in its order.

    Each is a `LogisticRegression(class_weight="balanced")`, fitted from the solution at the next smaller C (a warm
    start: the fits follow the regularisation path, which saves about a third of the iterations). Labels that hold a
    single class (an AU never or always present in training) give a constant predictor of that class instead.
    Each classifier's `converged_` says whether lbfgs met its tolerance within `MAX_ITER` iterations.
    """
    if len(np.unique(labels)) < 2:
        constant = DummyClassifier(strategy="most_frequent").fit(features, labels)
        return [constant] * len(C_grid)
    order = sorted(range(len(C_grid)), key=lambda index: C_grid[index])
    path = [None] * len(C_grid)
    classifier = LogisticRegression(class_weight="balanced", max_iter=MAX_ITER, warm_start=True)
    for index in order:
        classifier.set_params(C=C_grid[index])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            classifier.fit(features, labels)
        classifier.converged_ = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        path[index] = copy.deepcopy(classifier)
    return path


def fit_task(features: np.ndarray, labels: np.ndarray, task: str, C_grid: tuple[float, ...]) -> list[list]:
    """The classifiers of a task at each strength of `C_grid`: `result[i]` holds, for `C_grid[i]`, one classifier
    per AU, fitted on the rows where the AU is known (labels of -1 are left out), or one multinomial classifier over
    the classes (expressions)."""
    with threadpool_limits(1):  # lbfgs on a few thousand rows: one BLAS thread is ~3x faster than two that wait
        if task == "expression":
            return [[classifier] for classifier in fit_path(features, labels, C_grid)]
        per_au = []
        for column in range(labels.shape[1]):
            known = labels[:, column] >= 0
            if not known.any():  # never annotated in training: predicted absent
                absent = DummyClassifier(strategy="constant", constant=0).fit(features[:1], [0])
                per_au.append([absent] * len(C_grid))
            else:
                per_au.append(fit_path(features[known], labels[known, column], C_grid))
    return [list(classifiers) for classifiers in zip(*per_au)]


def predict_task(classifiers: list, features: np.ndarray, task: str, mirrored: np.ndarray | None = None) -> np.ndarray:
    """(n, num_aus) 0/1 predictions (AUs) or (n,) class indices (expressions) of one strength's classifiers.

    With `mirrored` (the (n, d) features of the same images mirrored left-right), each prediction is that of the mean
    decision function of the image and its mirror image (test-time mirroring, as `CLEFConfig.test_time_flip`)."""

    def decide(classifier) -> np.ndarray:
        if mirrored is None or not hasattr(classifier, "decision_function"):  # constant predictors: no scores
            return classifier.predict(features)
        scores = (classifier.decision_function(features) + classifier.decision_function(mirrored)) / 2
        return classifier.classes_[scores.argmax(-1) if scores.ndim == 2 else (scores > 0).astype(int)]

    if task == "expression":
        return decide(classifiers[0])
    return np.stack([decide(classifier) for classifier in classifiers], axis=1)


def reference_row(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], task: str, label_ids: list[str],
                  C_grid: tuple[float, ...], mirrored: dict[str, np.ndarray] | None = None) -> dict:
    """One row: fit on `train` at each C, keep the C (and, with `mirrored`, whether to mirror at test time) with
    the best validation metric (the first one on ties, the single pass before the mirrored one), and score `test`
    once with it.

    Args:
        features: `{"train", "validation", "test"}` -> (n, d) features, standardised on the training split.
        labels: the same keys -> labels as `label_array` gives them.
        mirrored: `{"validation", "test"}` -> the features of the same images mirrored left-right, standardised
            alike; given, test-time mirroring ([`predict_task`]) is one more choice made on validation.

    Returns:
        `{"C", "test_time_flip", "validation" (metrics at C), "validation_by_C" ({C: selection metric}, single
        pass), "test" (metrics at C), "num_features", "converged"}`.
    """
    key = BEST_METRIC[task]
    path = fit_task(features["train"], labels["train"], task, C_grid)
    by_C, best = {}, None
    for C, classifiers in zip(C_grid, path):
        for flip in (False, True) if mirrored is not None else (False,):
            predictions = predict_task(classifiers, features["validation"], task,
                                       mirrored["validation"] if flip else None)
            metrics = prediction_metrics(predictions.tolist(), labels["validation"].tolist(), task, label_ids)
            if not flip:
                by_C[str(C)] = metrics[key]
            if best is None or metrics[key] > best[2][key]:
                best = (C, flip, metrics, classifiers)
    C, flip, validation, classifiers = best
    predictions = predict_task(classifiers, features["test"], task, mirrored["test"] if flip else None)
    test = prediction_metrics(predictions.tolist(), labels["test"].tolist(), task, label_ids)
    converged = all(getattr(classifier, "converged_", True) for classifier in classifiers)
    return {"C": C, "test_time_flip": flip, "validation": validation, "validation_by_C": by_C, "test": test,
            "num_features": int(features["train"].shape[1]), "converged": converged}


def classical_references(
    train_split: datasets.Dataset,
    validation_split: datasets.Dataset,
    test_split: datasets.Dataset,
    task: str,
    label_ids: list[str],
    image_size: int | None = None,
    C_grid: tuple[float, ...] = DEFAULT_C_GRID,
    select_test_time_flip: bool = False,
) -> dict:
    """Logistic regression on raw grey pixels and on HOG, C chosen on `validation_split`, scored once on
    `test_split`.

    Args:
        train_split, validation_split, test_split: splits with an `image` column and the task's label column (`au`:
            a list of 1 / 0 / -1 per AU, -1 unknown and ignored; `expression`: class indices), as the builders of
            `dataset_builders` write them.
        task: "au" or "expression".
        label_ids: the labels in column (AUs) or class (expressions) order, e.g. `au_ids_of(train_split)`; the keys
            of the per-label metrics.
        image_size: the side, in pixels, that images are resized to (grey); default: the first training image's size.
        C_grid: the strengths tried on the validation split.
        select_test_time_flip: also choose on the validation split whether to predict from the mean decision of
            each image and its mirror image, the choice `FineTuningArguments.select_test_time_flip` gives the CLEF
            rows (so that both sides of the table get it).

    Returns:
        `{"task", "selection_metric", "C_grid", "image_size", "num_images" ({split: n}), "test_baseline" (the trivial
        predictor of `baseline_metrics` on the test split), "rows": {PIXELS_ROW: row, HOG_ROW: row}}`, each row as
        [`reference_row`] returns it.
    """
    if task not in BEST_METRIC:
        raise ValueError(f"task must be 'au' or 'expression', got {task!r}.")
    if not C_grid or any(C <= 0 for C in C_grid):
        raise ValueError(f"C_grid must hold positive strengths, got {C_grid!r}.")
    label_ids = list(label_ids)
    named = {"train": train_split, "validation": validation_split, "test": test_split}
    for name, split in named.items():
        get_split({name: split}, name, ("image", task), f"{name}_split")  # names a missing column, or an empty split
    if image_size is None:
        size = train_split[0]["image"].size
    elif image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels (two HOG blocks), got {image_size}.")
    else:
        size = (image_size, image_size)

    images = {name: grey_images(split, size) for name, split in named.items()}
    labels = {name: label_array(split, task, label_ids, name) for name, split in named.items()}
    rows = {}
    for row, featurise in ((PIXELS_ROW, pixel_features), (HOG_ROW, hog_features)):
        raw = {name: featurise(split_images) for name, split_images in images.items()}
        if select_test_time_flip:  # the mirror images, scaled with the training split's statistics too
            raw.update({f"{name} mirrored": featurise(np.ascontiguousarray(images[name][:, :, ::-1]))
                        for name in ("validation", "test")})
        scaled = standardised(raw)
        features = {name: scaled[name] for name in images}
        mirrored = {name: scaled[f"{name} mirrored"] for name in ("validation", "test")} if select_test_time_flip \
            else None
        rows[row] = reference_row(features, labels, task, label_ids, tuple(C_grid), mirrored)
    return {
        "task": task, "selection_metric": BEST_METRIC[task], "C_grid": list(C_grid), "image_size": list(size),
        "num_images": {name: len(split) for name, split in named.items()},
        "test_baseline": baseline_metrics(train_split, test_split, task, label_ids),
        "rows": rows,
    }


#: The row of [`linear_probe`].
PROBE_ROW = "logistic regression on the model's image features"


def linear_probe(
    model,
    processor,
    train_split: datasets.Dataset,
    validation_split: datasets.Dataset,
    test_split: datasets.Dataset,
    task: str,
    label_ids: list[str],
    C_grid: tuple[float, ...] = DEFAULT_C_GRID,
) -> dict:
    """A linear probe of a model's frozen image features: the classical rows' logistic regression, C chosen on
    `validation_split`, on `model.get_image_features` (L2-normalised, then standardised on the training split)
    instead of pixels. Next to the model's own text-driven head on the same split, it says whether what the model
    misses is in its image features at all.

    Args:
        model, processor: a [`CLEFModel`] (or any model with `get_image_features`) and its processor.
        train_split, validation_split, test_split, task, label_ids, C_grid: as for [`classical_references`].

    Returns:
        `{"task", "selection_metric", "C_grid", "num_images", "rows": {PROBE_ROW: row}}`, the row as
        [`reference_row`] returns it.
    """
    from ..feature_tsne import image_features  # here, not at the top: feature_tsne imports clef_hf.training

    if task not in BEST_METRIC:
        raise ValueError(f"task must be 'au' or 'expression', got {task!r}.")
    named = {"train": train_split, "validation": validation_split, "test": test_split}
    for name, split in named.items():
        get_split({name: split}, name, ("image", task), f"{name}_split")
    features = standardised({name: image_features(model, processor, list(split["image"]))
                             for name, split in named.items()})
    labels = {name: label_array(split, task, list(label_ids), name) for name, split in named.items()}
    return {
        "task": task, "selection_metric": BEST_METRIC[task], "C_grid": list(C_grid),
        "num_images": {name: len(split) for name, split in named.items()},
        "rows": {PROBE_ROW: reference_row(features, labels, task, list(label_ids), tuple(C_grid))},
    }


__all__ = [
    "DEFAULT_C_GRID",
    "HOG_OPTIONS",
    "HOG_ROW",
    "PIXELS_ROW",
    "PROBE_ROW",
    "classical_references",
    "fit_path",
    "fit_task",
    "grey_images",
    "hog_features",
    "linear_probe",
    "pixel_features",
    "predict_task",
    "standardised",
]

"""Tables and figures of facial-behavior pipeline results.

`pipeline("facial-behavior")` returns, per image, one entry per face::

    {"box": {"xmin": 10, "ymin": 20, "xmax": 110, "ymax": 120},
     "predictions": [{"label": "AU12", "name": "lip corner puller", "score": 0.83, "present": True}, ...]}

(AU models give one prediction per action unit with a `present` flag; expression models give their top-k
`{"label", "score"}` sorted by score.) `results_to_dataframe` flattens such results, for one image, a batch of images
or the per-frame records of `clef_hf.video.analyze_video`, into a `pandas.DataFrame` with one row per face;
`plot_face_scores` draws one face's crop beside a bar chart of its scores.

Figures are built as `matplotlib.figure.Figure` objects without pyplot, so nothing here selects a backend, opens a
window or keeps figures alive in pyplot's registry; save them with `fig.savefig(...)` (notebooks display them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

__all__ = ["BOX_COLUMNS", "plot_face_scores", "results_to_dataframe"]

#: The face-box columns of `results_to_dataframe`, in order.
BOX_COLUMNS: tuple[str, ...] = ("xmin", "ymin", "xmax", "ymax")
#: Suffix of the per-label presence columns of AU results.
PRESENT_SUFFIX = "_present"

PRESENT_COLOR = "tab:red"
ABSENT_COLOR = "tab:gray"
SCORE_COLOR = "tab:blue"


# --------------------------------------------------------------------------------------------------------- tables


def _is_face(item: Any) -> bool:
    return isinstance(item, dict) and "predictions" in item


def _is_video_record(item: Any) -> bool:
    return isinstance(item, dict) and "faces" in item


def _describe(item: Any) -> str:
    if isinstance(item, dict):
        return f"a dict with keys {sorted(map(str, item))}"
    return f"a {type(item).__name__}"


def _split_results(
    results: Any, image_ids: Sequence[Any] | None, require_video: bool
) -> tuple[bool, list[tuple[dict[str, Any], list[Any], str]]]:
    """(is_video, [(key columns, faces, where)]) for every image or frame in `results`."""
    if isinstance(results, dict):
        if not _is_video_record(results):
            raise TypeError(
                f"results_to_dataframe takes a pipeline output (a list of faces, or a list of such lists) or "
                f"analyze_video records, got {_describe(results)}."
            )
        results = [results]
    elif isinstance(results, (str, bytes)) or not isinstance(results, Iterable):
        raise TypeError(f"results_to_dataframe takes a list of pipeline results, got {_describe(results)}.")
    items = list(results)

    if items and all(_is_video_record(item) for item in items):
        if image_ids is not None:
            raise ValueError("image_ids does not apply to video records: their rows are identified by frame.")
        entries = []
        for i, record in enumerate(items):
            for key in ("frame", "timestamp"):
                if key not in record:
                    raise ValueError(f"Video record results[{i}] has no {key!r} (keys: {sorted(record)}).")
            keys = {"frame": record["frame"], "timestamp": record["timestamp"]}
            entries.append((keys, record["faces"], f"results[{i}]['faces']"))
        return True, entries
    if require_video:
        if not items:  # a video whose frames were all filtered out: an empty table with the video columns
            return True, []
        culprit = next(i for i, item in enumerate(items) if not _is_video_record(item))
        raise TypeError(
            f"Expected analyze_video records ({{'frame', 'timestamp', 'faces'}} dicts); results[{culprit}] is "
            f"{_describe(items[culprit])}."
        )

    if items and all(_is_face(item) for item in items):
        images = [items]  # one image's faces
        where = ["results"]
    elif not items:
        # `pipe(image)` returns [] when it finds no face: one image without faces, unless image_ids says none.
        images = [] if image_ids is not None and len(image_ids) == 0 else [items]
        where = ["results"] * len(images)
    else:
        for i, item in enumerate(items):
            if not isinstance(item, (list, tuple)):
                raise TypeError(
                    f"results[{i}] is {_describe(item)}; expected a list of faces (one image's pipeline output), "
                    "so that results is a list of such lists, or a face dict with 'box' and 'predictions' in every "
                    "entry of one image's list."
                )
        images = items
        where = [f"results[{i}]" for i in range(len(items))]

    if image_ids is None:
        ids: Sequence[Any] = range(len(images))
    else:
        ids = list(image_ids)
        if len(ids) != len(images):
            raise ValueError(f"Got {len(ids)} image_ids for {len(images)} images of results.")
    return False, [({"image": image_id}, faces, w) for image_id, faces, w in zip(ids, images, where)]


def _box(face: dict[str, Any], where: str) -> list[float]:
    box = face.get("box")
    if not isinstance(box, dict) or any(key not in box for key in BOX_COLUMNS):
        raise ValueError(f"{where} has no box with {', '.join(BOX_COLUMNS)}: got {box!r}.")
    return [box[key] for key in BOX_COLUMNS]


def _predictions(face: Any, where: str) -> list[dict[str, Any]]:
    if not _is_face(face):
        raise TypeError(f"{where} is {_describe(face)}; expected a face dict with 'box' and 'predictions'.")
    predictions = face["predictions"]
    if not isinstance(predictions, (list, tuple)):
        raise TypeError(f"{where}['predictions'] is {_describe(predictions)}; expected a list of predictions.")
    for j, prediction in enumerate(predictions):
        if not isinstance(prediction, dict) or "label" not in prediction or "score" not in prediction:
            raise ValueError(f"{where}['predictions'][{j}] needs 'label' and 'score', got {prediction!r}.")
    return list(predictions)


def results_to_dataframe(
    results: Any,
    image_ids: Sequence[Any] | None = None,
    *,
    labels: Sequence[str] | None = None,
    keep_empty: bool = False,
    require_video: bool = False,
) -> pd.DataFrame:
    """Flatten facial-behavior pipeline results into a `pandas.DataFrame` with one row per face.

    Accepts one image's output (a list of face dicts), a batch's output (a list of such lists, one per image), or
    `clef_hf.video.analyze_video` records (dicts with "frame", "timestamp" and "faces"; a generator is consumed).

    Columns, in order:

    - `image` (the entry of `image_ids`, default the image's index in `results`), or for video records `frame` and
      `timestamp` (seconds) instead;
    - `face`: the face's index within its image or frame (the pipeline's order);
    - `face_id`, where the faces carry one (video tracking, `clef_hf.video.analyze_video`): the person's id, the same
      in every frame where the tracker followed that face;
    - `xmin`, `ymin`, `xmax`, `ymax`: the face box in pixels;
    - one column per label (`AU1`, `AU12`, `happiness`, ...) holding its score; NaN where a face has no score for
      that label (expression results limited by `top_k`);
    - for AU results, one boolean column `<label>_present` per label (e.g. `AU12_present`), after all the score
      columns, so that `df[labels]` and `df[[f"{l}_present" for l in labels]]` select each block.

    Label columns follow `labels` when given (labels found in the results but not listed come after them), otherwise
    the order in which labels first appear: the model's order for AU results; for expression results, which the
    pipeline sorts by score, pass `labels=pipe.model.config.label_ids` for a stable order. `df.attrs["label_names"]`
    maps labels to their names ("AU12" -> "lip corner puller") where the predictions carry names.

    Args:
        results: pipeline output(s) or video records, as above. A bare `[]` (what `pipe(image)` returns for an image
            without faces) is one image without faces, unless `image_ids=[]`.
        image_ids: an identifier per image (file names, say) for the `image` column; not for video records.
        labels: the order of the label columns.
        keep_empty: images (frames) without faces get one row with `face` and all values missing (`<NA>`/NaN)
            instead of no row, so every input appears in the table.
        require_video: raise `TypeError` unless `results` are video records (`video_results_to_dataframe` sets it).

    Returns:
        The table; with no face at all (and `keep_empty=False`) it has no rows but keeps the identifying and box
        columns (and the label columns of `labels`).
    """
    is_video, entries = _split_results(results, image_ids, require_video)
    key_columns = ["frame", "timestamp"] if is_video else ["image"]

    rows: list[dict[str, Any]] = []
    label_order: dict[str, None] = {}
    present_labels: set[str] = set()
    names: dict[str, str] = {}
    empty_rows = False
    has_face_ids = False
    for keys, faces, where in entries:
        if not isinstance(faces, (list, tuple)):
            raise TypeError(f"{where} is {_describe(faces)}; expected the list of faces of one image.")
        if not faces:
            if keep_empty:
                rows.append(dict(keys))
                empty_rows = True
            continue
        for j, face in enumerate(faces):
            face_where = f"{where}[{j}]"
            predictions = _predictions(face, face_where)
            row = dict(keys)
            row["face"] = j
            if face.get("face_id") is not None:
                row["face_id"] = int(face["face_id"])
                has_face_ids = True
            row.update(zip(BOX_COLUMNS, _box(face, face_where)))
            for prediction in predictions:
                label = str(prediction["label"])
                label_order.setdefault(label, None)
                row[label] = float(prediction["score"])
                if "present" in prediction:
                    present_labels.add(label)
                    row[label + PRESENT_SUFFIX] = bool(prediction["present"])
                if prediction.get("name") is not None:
                    names.setdefault(label, str(prediction["name"]))
            rows.append(row)

    ordered = list(dict.fromkeys([*(labels or []), *label_order]))
    columns = [*key_columns, "face", *(["face_id"] if has_face_ids else []), *BOX_COLUMNS, *ordered]
    columns += [label + PRESENT_SUFFIX for label in ordered if label in present_labels]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    if not rows:
        return frame.astype({label: "float64" for label in ordered})
    frame["face"] = frame["face"].astype("Int64" if empty_rows else "int64")
    if has_face_ids:
        frame["face_id"] = frame["face_id"].astype("Int64" if frame["face_id"].isna().any() else "int64")
    for label in ordered:
        frame[label] = frame[label].astype("float64")
        if label in present_labels:
            column = frame[label + PRESENT_SUFFIX]
            frame[label + PRESENT_SUFFIX] = column.astype("boolean" if column.isna().any() else "bool")
    if names:
        frame.attrs["label_names"] = names
    return frame


# -------------------------------------------------------------------------------------------------------- figures


def _to_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"Image file {os.fspath(image)!r} not found.")
        with Image.open(image) as opened:
            return opened.convert("RGB")
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.dtype != np.uint8:
            if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
                array = array * 255.0
            array = np.clip(array, 0, 255).astype(np.uint8)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(f"An image array must be H x W, H x W x 3 or H x W x 4, got shape {image.shape}.")
        return Image.fromarray(array).convert("RGB")
    raise TypeError(f"image must be a PIL image, an RGB array or an image path, got {type(image).__name__}.")


def _crop_box(face_result: dict[str, Any], size: tuple[int, int]) -> tuple[int, int, int, int]:
    xmin, ymin, xmax, ymax = (float(value) for value in _box(face_result, "face_result"))
    width, height = size
    left, top = max(0, math.floor(xmin)), max(0, math.floor(ymin))
    right, bottom = min(width, math.ceil(xmax)), min(height, math.ceil(ymax))
    if right <= left or bottom <= top:
        raise ValueError(
            f"The face box {face_result['box']} lies outside the {width} x {height} image (or is empty): "
            "is this face_result from this image?"
        )
    return left, top, right, bottom


def plot_face_scores(
    image: Any,
    face_result: dict[str, Any],
    ax: Axes | Sequence[Axes] | None = None,
    top_k: int | None = None,
) -> Figure:
    """Draw one face's crop beside a horizontal bar chart of its AU or expression scores.

    AU bars are red where the pipeline marks the AU present and grey where absent; expression bars are blue, the
    highest score first. Scores are drawn on a 0-1 axis, each bar labelled with its value.

    Args:
        image: the image the face was found in: a PIL image, an RGB `numpy` array (H x W x 3) or an image path.
        face_result: one face of the pipeline's output for `image` (`{"box": ..., "predictions": [...]}`).
        ax: where to draw. `None`: a new figure with the crop on the left and the bars on the right. A pair of axes
            `(crop_ax, bar_ax)`: draw into them. A single `Axes`: the bar chart only (the crop needs its own axes).
        top_k: show only the `top_k` highest scores, highest first; `None` shows every prediction in the pipeline's
            order (the model's AU order; expressions by score).

    Returns:
        The `matplotlib.figure.Figure` drawn in (the axes' figure when `ax` is given). Built without pyplot: call
        `fig.savefig(...)`, or let a notebook display it.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}.")
    if not isinstance(face_result, dict):
        raise TypeError(
            f"face_result must be one face dict of the pipeline output, got {_describe(face_result)} "
            "(for an image's output `faces`, pass faces[i])."
        )
    predictions = _predictions(face_result, "face_result")
    if not predictions:
        raise ValueError("face_result has no predictions to plot.")
    picture = _to_pil(image)
    left, top, right, bottom = _crop_box(face_result, picture.size)
    crop = picture.crop((left, top, right, bottom))

    if top_k is not None:
        predictions = sorted(predictions, key=lambda p: float(p["score"]), reverse=True)[:top_k]

    crop_ax: Axes | None
    if ax is None:
        figure = Figure(figsize=(8.0, max(3.0, 0.4 * len(predictions) + 1.2)), layout="constrained")
        crop_ax, bar_ax = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.6]})
    elif isinstance(ax, Axes):
        crop_ax, bar_ax = None, ax
        figure = ax.figure
    else:
        axes = list(ax)
        if len(axes) != 2 or not all(isinstance(a, Axes) for a in axes):
            raise TypeError("ax must be None, an Axes, or a pair of Axes (crop_ax, bar_ax).")
        crop_ax, bar_ax = axes
        figure = bar_ax.figure

    if crop_ax is not None:
        crop_ax.imshow(np.asarray(crop))
        crop_ax.set_title(f"face ({left}, {top})-({right}, {bottom})", fontsize=9)
        crop_ax.set_axis_off()

    is_au = any("present" in p for p in predictions)
    scores = [float(p["score"]) for p in predictions]
    names = [
        f"{p['label']} {p['name']}" if p.get("name") and p["name"] != p["label"] else str(p["label"])
        for p in predictions
    ]
    if is_au:
        colors = [PRESENT_COLOR if p.get("present") else ABSENT_COLOR for p in predictions]
    else:
        colors = [SCORE_COLOR] * len(predictions)
    positions = np.arange(len(predictions))
    bars = bar_ax.barh(positions, scores, color=colors)
    bar_ax.set_yticks(positions, labels=names, fontsize=8)
    bar_ax.invert_yaxis()  # first prediction on top
    bar_ax.set_xlim(0.0, 1.0)
    bar_ax.set_xlabel("score")
    bar_ax.bar_label(bars, labels=[f"{s:.2f}" for s in scores], padding=2, fontsize=7)
    if is_au:
        bar_ax.set_title("action units", fontsize=9)
        bar_ax.legend(
            handles=[Patch(color=PRESENT_COLOR, label="present"), Patch(color=ABSENT_COLOR, label="absent")],
            loc="lower right",
            fontsize=7,
        )
    else:
        bar_ax.set_title("expression", fontsize=9)
    return figure

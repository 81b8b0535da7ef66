"""t-SNE of held-out image features after each training stage, coloured by expression (the paper's Fig. 5), with the
silhouette score that turns "each stage groups the features" into a number.

    model, processor = load_stage_model("outputs/demo/expression-model")
    features = image_features(model, processor, images)            # (n, projection_dim), unit length
    score = silhouette(features, labels)                            # cosine silhouette, in [-1, 1]
    embedding = tsne_embedding(features, seed=0)                    # (n, 2)
    figure = plot_feature_tsne([("fine-tuned", embedding, labels, label_names, score)])
    figure.savefig("tsne.png")

`scripts/tsne_stages.py` runs this for several stages (a freshly initialised model from a `CLEFConfig` JSON, the
pre-trained and the fine-tuned checkpoints) on one split, and writes the figure and the scores.

The silhouette of a sample is `(b - a) / max(a, b)`, with `a` its mean distance to the samples of its own class and `b`
the smallest mean distance to another class; the score is the mean over samples: near 1 when the classes form tight,
separate groups, near 0 when they overlap (e.g. labels unrelated to the features), negative when samples sit closer to
another class than to their own. It is computed on the features themselves (cosine distance, what the model's logits
use) and on the 2-D t-SNE embedding (euclidean), which is what the figure shows.

Figures are built as `matplotlib.figure.Figure` objects without pyplot, as in `clef_hf.visualization`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score
from torch import nn

from .modeling_clef import CLEFModel
from .processing_clef import CLEFProcessor
from .training.data import FacialBehaviorCollator
from .training.initialization import _model_type, load_model_and_processor

__all__ = [
    "DEFAULT_PERPLEXITY",
    "FeaturePanel",
    "effective_perplexity",
    "expression_images",
    "image_features",
    "load_stage_model",
    "plot_feature_tsne",
    "silhouette",
    "stratified_subset",
    "tsne_embedding",
]

#: scikit-learn's default t-SNE perplexity (roughly the number of neighbours each point attends to).
DEFAULT_PERPLEXITY = 30.0
#: The fewest points a t-SNE embedding is computed for.
MIN_TSNE_POINTS = 3


# ------------------------------------------------------------------------------------------------- models and data


def load_stage_model(model_or_config: str | os.PathLike, seed: int = 0) -> tuple[CLEFModel, CLEFProcessor]:
    """The model and processor of one stage, in eval mode.

    Args:
        model_or_config: a saved model folder (a CLEF checkpoint, loaded as it is, or a CLIP checkpoint in
            transformers' format, converted as training converts it), or a `CLEFConfig` JSON file: a freshly
            initialised model with the package tokenizer, built as a training run from `--config_file` builds it
            (`clef_hf.training.initialization.load_model_and_processor`).
        seed: the torch seed of a fresh initialisation (the global random state is left as it was); unused for a
            saved model.

    Raises:
        ValueError: naming `model_or_config` when it is neither a folder nor a `.json` file, or not a model.
    """
    path = os.fspath(model_or_config)
    if os.path.isfile(path):
        if not path.endswith(".json"):
            raise ValueError(f"{path!r} is a file but not a CLEFConfig JSON (.json); pass a saved model folder or a "
                             "config file such as configs/demo_model.json.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model, processor = load_model_and_processor(config_file=path)
            except (ValueError, TypeError) as error:
                raise ValueError(f"{path!r} is not a usable CLEFConfig JSON: {error}") from error
    elif os.path.isdir(path):
        model_type = _model_type(path)  # raises, naming the folder, when it has no config.json
        if model_type == "clef":
            model, processor = CLEFModel.from_pretrained(path), CLEFProcessor.from_pretrained(path)
        else:
            model, processor = load_model_and_processor(model_name_or_path=path)
    else:
        raise ValueError(f"{path!r} is neither a saved model folder nor a CLEFConfig JSON file: no such file or "
                         "folder.")
    return model.eval(), processor


def stratified_subset(labels: Sequence[int] | np.ndarray, max_items: int, seed: int = 0) -> np.ndarray:
    """At most `max_items` indices of `labels`, drawn per class in proportion to the class sizes (largest remainders
    round), every class kept while `max_items` allows one each; the same for the same `seed`.

    Args:
        labels: (n,) class ids.
        max_items: how many indices to keep; `>= n` keeps all.
        seed: seed of the draw within each class.

    Returns:
        (min(n, max_items),) int64 indices into `labels`, ascending.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one class id per item, got an array of shape {labels.shape}.")
    if isinstance(max_items, bool) or not isinstance(max_items, (int, np.integer)) or max_items < 1:
        raise ValueError(f"max_items must be a positive integer, got {max_items!r}.")
    n = len(labels)
    if max_items >= n:
        return np.arange(n, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * max_items / n
    taken = np.floor(quotas).astype(np.int64)
    by_remainder = np.argsort(-(quotas - taken), kind="stable")
    taken[by_remainder[: max_items - int(taken.sum())]] += 1
    if max_items >= len(classes):  # a class rounded to nothing takes one from the largest allocation
        for empty in np.flatnonzero(taken == 0):
            taken[int(np.argmax(taken))] -= 1
            taken[empty] = 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == value), size=int(k), replace=False)
              for value, k in zip(classes, taken) if k]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def expression_images(
    split: Any, max_images: int | None = None, seed: int = 0, column: str = "expression"
) -> tuple[list[Image.Image], np.ndarray, list[str]]:
    """The images of a `datasets` split with an expression label, and their labels.

    Rows without an expression (-1, the schema's "unknown") are dropped; with `max_images`, a [`stratified_subset`]
    of the rest is kept.

    Args:
        split: a `datasets.Dataset` with an `image` column and a `ClassLabel` column `column`.
        max_images: keep at most this many images (None: all).
        seed: seed of the subset.

    Returns:
        `(images, labels, label_names)`: n RGB PIL images, (n,) int64 class ids, and the class names of the
        `ClassLabel`, indexed by class id.
    """
    if column not in split.column_names or "image" not in split.column_names:
        raise ValueError(f"The split needs an 'image' and an {column!r} column; it has {split.column_names}.")
    label_names = getattr(split.features[column], "names", None)
    if label_names is None:
        raise ValueError(f"The {column!r} column must be a ClassLabel (class names), got {split.features[column]}.")
    labels = np.asarray(split.select_columns([column])[column], dtype=np.int64)
    keep = np.flatnonzero(labels >= 0)
    if max_images is not None:
        keep = keep[stratified_subset(labels[keep], max_images, seed)]
    rows = split.select(keep.tolist())
    images = [image.convert("RGB") for image in rows["image"]]
    return images, labels[keep], list(label_names)


@torch.no_grad()
def image_features(model: CLEFModel, processor: Any, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
    """L2-normalised image features, `model.get_image_features` of `images` preprocessed exactly as evaluation
    preprocesses a split (`FacialBehaviorCollator`: the processor's image processor on RGB images, no face detection:
    the images are face crops already).

    The model runs in eval mode without gradients, on the device of its parameters; its training mode is restored.

    Args:
        model: a `CLEFModel` (or anything with `get_image_features(pixel_values)`).
        processor: a `CLEFProcessor`, or its image processor.
        images: n PIL images.
        batch_size: images per forward pass.

    Returns:
        (n, projection_dim) float32 features of unit length.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    images = list(images)
    if not images:
        raise ValueError("image_features needs at least one image, got none.")
    for index, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"images[{index}] is a {type(image).__name__}; expected a PIL image.")
    collate = FacialBehaviorCollator(getattr(processor, "image_processor", processor))
    parameter = next(model.parameters())
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(images), batch_size):
            pixel_values = collate([{"image": image} for image in images[start:start + batch_size]])["pixel_values"]
            features = model.get_image_features(pixel_values.to(device=parameter.device, dtype=parameter.dtype))
            chunks.append(nn.functional.normalize(features.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy()


# ------------------------------------------------------------------------------------------------ scores and t-SNE


def _as_features(features: Any, name: str = "features") -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (n, dim) array, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} hold NaN or infinite values.")
    return array


def _as_labels(labels: Any, n: int, what: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be one class id per point, got an array of shape {array.shape}.")
    if len(array) != n:
        raise ValueError(f"labels has {len(array)} entries but {what} has {n} rows: one label per point.")
    return array


def silhouette(features: Any, labels: Any, metric: str = "cosine") -> float:
    """The silhouette score of `features` grouped by `labels` (`sklearn.metrics.silhouette_score`).

    Args:
        features: (n, dim) points, e.g. [`image_features`] (use `metric="cosine"`) or a t-SNE embedding (n, 2)
            (`metric="euclidean"`).
        labels: (n,) class ids; between 2 and n - 1 distinct classes.
        metric: a distance of `sklearn.metrics.pairwise_distances`.

    Returns:
        The mean silhouette, in [-1, 1].
    """
    points = _as_features(features)
    classes = _as_labels(labels, len(points), "features")
    num_classes = len(np.unique(classes))
    if num_classes < 2:
        raise ValueError(f"The silhouette needs at least 2 expression classes; labels hold {num_classes} "
                         f"({np.unique(classes).tolist()}).")
    if num_classes > len(points) - 1:
        raise ValueError(f"The silhouette needs fewer classes than points; labels hold {num_classes} classes for "
                         f"{len(points)} points.")
    return float(silhouette_score(points, classes, metric=metric))


def effective_perplexity(num_points: int, perplexity: float = DEFAULT_PERPLEXITY) -> float:
    """`perplexity` clipped to `(num_points - 1) / 3`: t-SNE attends to the `3 * perplexity` nearest neighbours of each
    point, which must exist (scikit-learn refuses a perplexity of `num_points` or more)."""
    if not perplexity > 0:
        raise ValueError(f"perplexity must be positive, got {perplexity!r}.")
    return float(min(perplexity, (num_points - 1) / 3))


def tsne_embedding(features: Any, seed: int = 0, perplexity: float = DEFAULT_PERPLEXITY) -> np.ndarray:
    """A 2-D t-SNE embedding of `features` (`sklearn.manifold.TSNE`, PCA initialisation, euclidean distance: on unit
    features the euclidean distance grows with the cosine distance, `|a - b|^2 = 2 - 2 cos(a, b)`).

    Args:
        features: (n, dim) points, n >= 3, dim >= 2.
        seed: `random_state` of t-SNE; the same seed gives the same embedding (with the PCA initialisation the
            embedding hardly depends on the seed).
        perplexity: clipped by [`effective_perplexity`] for small n.

    Returns:
        (n, 2) float64 embedding.
    """
    points = _as_features(features)
    if len(points) < MIN_TSNE_POINTS:
        raise ValueError(f"t-SNE needs at least {MIN_TSNE_POINTS} points, got features of shape {points.shape}.")
    if points.shape[1] < 2:
        raise ValueError(f"t-SNE's PCA initialisation needs features of at least 2 dimensions, got {points.shape}.")
    tsne = TSNE(n_components=2, perplexity=effective_perplexity(len(points), perplexity), init="pca",
                learning_rate="auto", random_state=seed)
    return tsne.fit_transform(points)


# ------------------------------------------------------------------------------------------------------- the figure


class FeaturePanel(NamedTuple):
    """One subplot of [`plot_feature_tsne`]: a stage's embedding and its labels.

    Attributes:
        title: the stage's name.
        embedding: (n, 2) points.
        labels: (n,) class ids, indices into `label_names`.
        label_names: the class names.
        silhouette: the score shown in the title (None: not shown).
    """

    title: str
    embedding: Any
    labels: Any
    label_names: Sequence[str]
    silhouette: float | None = None


def _class_colors(names: list[str]) -> dict[str, Any]:
    """One colour per class name: tab10 up to 10 classes, tab20 up to 20, evenly spaced turbo beyond."""
    if len(names) <= 10:
        return {name: colormaps["tab10"](i) for i, name in enumerate(names)}
    if len(names) <= 20:
        return {name: colormaps["tab20"](i) for i, name in enumerate(names)}
    return {name: colormaps["turbo"](i / (len(names) - 1)) for i, name in enumerate(names)}


def _checked_panel(panel: Any, index: int) -> FeaturePanel:
    try:
        panel = FeaturePanel(*panel)
    except TypeError:
        raise TypeError(f"panels[{index}] must be (title, embedding, labels, label_names[, silhouette]), got "
                        f"{type(panel).__name__} {panel!r:.80}.") from None
    embedding = np.asarray(panel.embedding, dtype=np.float64)
    if embedding.ndim != 2 or embedding.shape[1] != 2:
        raise ValueError(f"panels[{index}] ({panel.title!r}): the embedding must be (n, 2), got shape "
                         f"{embedding.shape}.")
    labels = np.asarray(panel.labels)
    if labels.shape != (len(embedding),):
        raise ValueError(f"panels[{index}] ({panel.title!r}): labels has shape {labels.shape} but the embedding has "
                         f"{len(embedding)} points.")
    names = [str(name) for name in panel.label_names]
    if len(labels) and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                        or labels.max() >= len(names)):
        raise ValueError(f"panels[{index}] ({panel.title!r}): labels must be class ids in 0..{len(names) - 1} (one "
                         f"per label name), got values {np.unique(labels).tolist()[:10]}.")
    return FeaturePanel(str(panel.title), embedding, labels, names, panel.silhouette)


def plot_feature_tsne(panels: Sequence[Any], panel_size: float = 3.6) -> Figure:
    """One scatter plot per stage, side by side, points coloured by expression, the silhouette in each title, and one
    legend of the classes (a class has the same colour in every panel).

    Args:
        panels: [`FeaturePanel`]s or tuples `(title, embedding (n, 2), labels (n,), label_names, silhouette)`.
        panel_size: the side of each subplot, in inches.

    Returns:
        A `matplotlib.figure.Figure` (built without pyplot) with one axes per panel, in order.
    """
    checked = [_checked_panel(panel, index) for index, panel in enumerate(panels)]
    if not checked:
        raise ValueError("plot_feature_tsne needs at least one panel, got none.")
    shown: list[str] = []
    for panel in checked:  # classes in label-name order, as they first occur over the panels
        present = set(np.unique(panel.labels).tolist())
        shown += [name for i, name in enumerate(panel.label_names) if i in present and name not in shown]
    colors = _class_colors(shown)

    figure = Figure(figsize=(panel_size * len(checked) + 1.6, panel_size + 0.6), layout="constrained")
    axes = figure.subplots(1, len(checked), squeeze=False)[0]
    for ax, panel in zip(axes, checked):
        for class_id in np.unique(panel.labels):
            name = panel.label_names[class_id]
            points = panel.embedding[panel.labels == class_id]
            ax.scatter(points[:, 0], points[:, 1], s=10, color=colors[name], alpha=0.8, linewidths=0)
        title = panel.title if panel.silhouette is None else f"{panel.title}\nsilhouette {panel.silhouette:.3f}"
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", linestyle="", markersize=6, color=colors[name], label=name)
               for name in shown]
    axes[-1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False,
                    title="expression", title_fontsize=9)
    return figure

"""Relevancy maps of CLEF's image-text predictions (the paper's Fig. 4).

The maps follow Chefer et al., "Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
Transformers" (ICCV 2021), the method the paper cites for Fig. 4. For one image and one text (a label's prompt or any
text), the score explained is their cosine similarity `s = <v, t> / (|v| |t|)`. In every self-attention layer `b` of
an encoder, with attention maps `A_b` of shape `(heads, tokens, tokens)` and their gradients `dA_b = ds / dA_b`, the
relevancy of token `i` to token `j` is accumulated from the identity, first layer first:

    Ā_b = mean over heads of (dA_b ⊙ A_b)^+          (the positive part, Eq. 5 of Chefer et al.)
    R   = R + Ā_b · R                                 (Eq. 6 of Chefer et al.; R starts as the identity)

The row of `R` at the encoder's pooled token (the image's CLS token; the text's end-of-text token) says how much each
input token contributed: over the image patches it is the map, reshaped to the patch grid and resized to the image;
over the text it is one relevance per token.

    >>> from clef_hf.explain import explain
    >>> relevancy = explain(model, processor, face, label="AU12")   # or text="a person smiling"
    >>> relevancy.image_map.shape, relevancy.tokens                 # (64, 64) in [0, 1]; the prompt's words

Overlay it on the face with [`plot_relevancy`], draw a grid of faces by labels (the paper's Fig. 4) with
[`plot_relevancy_grid`] and the words' relevances with [`plot_token_relevance`]; like `clef_hf.visualization`, figures
are built without pyplot. [`relevancy_above`] measures how much of a map lies above an image row (the upper face).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from .image_inputs import load_rgb_image
from .vocabulary import fill_template

__all__ = [
    "Relevancy",
    "accumulate_relevancy",
    "explain",
    "explain_labels",
    "half_masking_drops",
    "label_prompt",
    "plot_relevancy",
    "plot_relevancy_grid",
    "plot_token_relevance",
    "relevancy_above",
    "summarize_face_shares",
    "upper_face_shares",
]


@dataclass
class Relevancy:
    """The relevancy of one image-text pair.

    Attributes:
        text: the text explained (a label's prompt, or the text given).
        score: their cosine similarity.
        patch_map: (grid, grid) relevancy of each image patch, normalised to [0, 1] (all zeros if nothing is relevant).
        image_map: (height, width) `patch_map` resized bilinearly to the image given, in [0, 1].
        tokens: the text's tokens, start- and end-of-text tokens included.
        token_relevance: (len(tokens),) relevancy of each word token to the end-of-text token, where the text is
            pooled, normalised to sum to 1; the start- and end-of-text tokens get 0.
    """

    text: str
    score: float
    patch_map: np.ndarray
    image_map: np.ndarray
    tokens: list[str]
    token_relevance: np.ndarray


def accumulate_relevancy(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al. (2021) Eq. 5-6: `R = I; R = R + mean_heads((dA ⊙ A)^+) R` for every layer, first to last.

    Args:
        attentions: per layer, (batch, heads, tokens, tokens) attention probabilities.
        gradients: per layer, the gradients of the explained score with respect to them, same shapes.

    Returns:
        (batch, tokens, tokens) the relevancy matrix `R`; row `i` says how much every input token contributed to
        the output at token `i`.
    """
    if not attentions or len(attentions) != len(gradients):
        raise ValueError(f"need one gradient per attention map, got {len(attentions)} maps and {len(gradients)}.")
    batch, _, tokens, _ = attentions[0].shape
    relevancy = torch.eye(tokens, dtype=attentions[0].dtype, device=attentions[0].device).expand(batch, -1, -1)
    for attention, gradient in zip(attentions, gradients):
        layer = (gradient * attention).clamp(min=0).mean(dim=1)  # (batch, tokens, tokens)
        relevancy = relevancy + torch.bmm(layer, relevancy)
    return relevancy


def label_prompt(config, label: str) -> str:
    """The prompt a label is scored with: its name in the name template (or, for a model trained on descriptions,
    `config.label_text == "descriptions"`, its description in the first description template).

    Args:
        config: a [`CLEFConfig`] with label names.
        label: a label id (`"AU12"`), or a label name (`"lip corner puller"`).
    """
    if label in config.label_ids:
        index = config.label_ids.index(label)
    elif label in config.label_names:
        index = config.label_names.index(label)
    else:
        raise ValueError(
            f"label {label!r} is neither a label id nor a label name of this model (ids: {list(config.label_ids)}); "
            "pass text=... to explain any other text."
        )
    if config.label_text == "descriptions":
        return fill_template(config.description_templates[0], [config.label_descriptions[index]])[0]
    return fill_template(config.name_template, [config.label_names[index]])[0]


@contextmanager
def _eager_attention(model: nn.Module):
    """Run the encoders with eager attention, whose attention probabilities are part of the autograd graph."""
    encoders = (model.vision_model, model.text_model)
    previous = [encoder.config._attn_implementation for encoder in encoders]
    try:
        for encoder in encoders:
            encoder.config._attn_implementation = "eager"
        yield
    finally:
        for encoder, implementation in zip(encoders, previous):
            encoder.config._attn_implementation = implementation


def _normalise(values: np.ndarray) -> np.ndarray:
    values = values - values.min()
    peak = values.max()
    return values / peak if peak > 0 else np.zeros_like(values)


def explain_labels(model, processor, image, labels: Sequence[str] = (), texts: Sequence[str] = ()) -> list[Relevancy]:
    """Relevancy maps of one face image for several labels and/or texts (one encoder pass each).

    Args:
        model: a [`CLEFModel`].
        processor: the [`CLEFProcessor`] that fits it.
        image: a face crop: a PIL image, an (H, W, 3) uint8 array, or a path.
        labels: label ids or names of the model, each explained through [`label_prompt`].
        texts: any other texts to explain.

    Returns:
        One [`Relevancy`] per label, then per text.
    """
    image = load_rgb_image(image)
    prompts = [label_prompt(model.config, label) for label in labels] + list(texts)
    if not prompts:
        raise ValueError("explain needs at least one label or text.")
    tokenizer = processor.tokenizer
    pixel_values = processor.image_processor(images=image, return_tensors="pt")["pixel_values"].to(model.device)
    grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
    was_training = model.training
    model.eval()
    results = []
    try:
        with _eager_attention(model), torch.enable_grad():
            # One pass of the image encoder serves every prompt: its graph is kept for each prompt's gradients.
            vision = model.vision_model(pixel_values=pixel_values, output_attentions=True)
            image_embeds = nn.functional.normalize(model.visual_projection(vision.pooler_output), dim=-1)
            for prompt in prompts:
                results.append(_explain_one(model, tokenizer, vision, image_embeds, prompt, grid, image.size))
    finally:
        model.train(was_training)
    return results


def explain(model, processor, image, label: str | None = None, text: str | None = None) -> Relevancy:
    """The relevancy map of one face image for one label (id or name) or one text; see [`explain_labels`]."""
    if (label is None) == (text is None):
        raise ValueError("pass exactly one of label=... (a label id or name) and text=...")
    labels, texts = ([label], []) if label is not None else ([], [text])
    return explain_labels(model, processor, image, labels, texts)[0]


def _explain_one(model, tokenizer, vision, image_embeds, prompt: str, grid: int, size: tuple[int, int]) -> Relevancy:
    text_inputs = tokenizer([prompt], truncation=True, max_length=model.config.text_config.max_position_embeddings,
                            return_tensors="pt")
    input_ids = text_inputs["input_ids"].to(model.device)
    text = model.text_model(input_ids=input_ids, output_attentions=True)
    text_embeds = nn.functional.normalize(model.text_projection(text.pooler_output), dim=-1)
    score = (image_embeds * text_embeds).sum()
    attentions = list(vision.attentions) + list(text.attentions)
    gradients = torch.autograd.grad(score, attentions, retain_graph=True)
    depth = len(vision.attentions)

    image_relevancy = accumulate_relevancy(vision.attentions, gradients[:depth])[0, 0, 1:]  # CLS row, patches only
    patch_map = image_relevancy.reshape(1, 1, grid, grid)
    image_map = nn.functional.interpolate(patch_map, size=(size[1], size[0]), mode="bilinear", align_corners=False)

    # The text is pooled at its end-of-text token, the last one of an unpadded prompt (CLIPTextTransformer's rule).
    # Its row of R - I is what the other tokens gave it through attention; the start token (where causal attention
    # parks what it does not use) and the end token itself get none, so the relevances are over the words.
    end = input_ids.shape[1] - 1
    text_relevancy = accumulate_relevancy(text.attentions, gradients[depth:])[0, end].clone()
    text_relevancy[0] = 0.0
    text_relevancy[end] = 0.0
    total = text_relevancy.sum()
    return Relevancy(
        text=prompt,
        score=float(score.detach()),
        patch_map=_normalise(patch_map[0, 0].detach().cpu().numpy()),
        image_map=_normalise(image_map[0, 0].detach().cpu().numpy()),
        tokens=tokenizer.convert_ids_to_tokens(input_ids[0].tolist()),
        token_relevance=(text_relevancy / total if total > 0 else text_relevancy).detach().cpu().numpy(),
    )


def relevancy_above(image_map: np.ndarray, row: float) -> float:
    """The share of a relevancy map's mass above an image row.

    Args:
        image_map: (height, width) non-negative relevancy ([`Relevancy.image_map`]).
        row: the row, as a fraction of the height (0 the top, 1 the bottom); the row through a pixel splits it.

    Returns:
        The mass above `row` over the whole mass, in [0, 1] (0.0 for an all-zero map).
    """
    image_map = np.asarray(image_map, dtype=np.float64)
    if image_map.ndim != 2:
        raise ValueError(f"image_map must be a (height, width) array, got shape {image_map.shape}.")
    if not 0.0 <= row <= 1.0:
        raise ValueError(f"row must be a fraction of the height in [0, 1], got {row}.")
    if (image_map < 0).any():
        raise ValueError("image_map must be non-negative (a Relevancy's image_map is in [0, 1]).")
    total = image_map.sum()
    if total == 0:
        return 0.0
    edge = row * image_map.shape[0]
    whole = int(np.floor(edge))
    above = image_map[:whole].sum()
    if whole < image_map.shape[0]:
        above += (edge - whole) * image_map[whole].sum()
    return float(above / total)


def upper_face_shares(model, processor, faces, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """For each label, how much of its relevancy lies above the upper/lower-face boundary, over the faces showing it.

    Args:
        model, processor: a [`CLEFModel`] and its [`CLEFProcessor`].
        faces: iterable of `(image, boundary, shown)`: a face, the row between its upper and lower face (a fraction
            of the height, e.g. `synthfaces.generator.face_halves_boundary`) and the label ids it shows.
        labels: the label ids to measure; a face counts for those of them it shows.

    Returns:
        `{label: (n, 2) array}`, a row per face showing the label: the share of the map above the boundary, and the
        boundary itself (the share a uniform map would have). A share above the boundary means the map leans to the
        upper face, below it to the lower face.
    """
    rows: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for image, boundary, shown in faces:
        present = [label for label in labels if label in set(shown)]
        if present:
            for label, relevancy in zip(present, explain_labels(model, processor, image, present)):
                rows[label].append((relevancy_above(relevancy.image_map, boundary), float(boundary)))
    return {label: np.asarray(values, dtype=np.float64).reshape(-1, 2) for label, values in rows.items()}


def half_masking_drops(model, processor, faces, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """An occlusion check of the maps: how much each label's image-text similarity falls when the upper face, or the
    lower face, is painted over with the image's mean colour.

    Args:
        model, processor, faces, labels: as for [`upper_face_shares`].

    Returns:
        `{label: (n, 2) array}`, a row per face showing the label: the fall of the similarity with the upper face
        masked, and with the lower face masked. A model that reads a mouth AU from the mouth loses more with the
        lower face masked.
    """
    ids = list(model.config.label_ids)
    unknown = [label for label in labels if label not in ids]
    if unknown:
        raise ValueError(f"labels {unknown} are not label ids of this model ({ids}).")
    prompts = [label_prompt(model.config, label) for label in labels]
    with torch.no_grad():
        text = processor.tokenizer(prompts, padding=True, return_tensors="pt").to(model.device)
        text_embeds = nn.functional.normalize(model.get_text_features(**text), dim=-1)
    rows: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for image, boundary, shown in faces:
        present = [index for index, label in enumerate(labels) if label in set(shown)]
        if not present:
            continue
        pixels = np.asarray(load_rgb_image(image))
        row = int(round(boundary * pixels.shape[0]))
        upper, lower = pixels.copy(), pixels.copy()
        upper[:row] = pixels.mean(axis=(0, 1))
        lower[row:] = pixels.mean(axis=(0, 1))
        batch = processor.image_processor(images=[pixels, upper, lower], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            image_embeds = nn.functional.normalize(model.get_image_features(batch.to(model.device)), dim=-1)
            similarity = (image_embeds @ text_embeds.T).cpu().numpy()
        for index in present:
            rows[labels[index]].append((float(similarity[0, index] - similarity[1, index]),
                                        float(similarity[0, index] - similarity[2, index])))
    return {label: np.asarray(values, dtype=np.float64).reshape(-1, 2) for label, values in rows.items()}


def summarize_face_shares(shares: dict[str, np.ndarray], drops: dict[str, np.ndarray] | None = None
                          ) -> dict[str, dict[str, float]]:
    """Per label of [`upper_face_shares`]: `faces` (how many), `mean_share_above` (of the map, above the boundary),
    `mean_area_above` (of the image, i.e. of a uniform map) and `upper_fraction`, the fraction of faces whose map has
    more of its mass above the boundary than a uniform map (near 1: the upper face; near 0: the lower face). With the
    [`half_masking_drops`] of the same faces, also `drop_upper_masked`, `drop_lower_masked` (mean falls of the
    similarity) and `upper_matters_fraction` (faces whose similarity falls more with the upper face masked)."""
    summary = {}
    for label, values in shares.items():
        if not len(values):
            summary[label] = {"faces": 0, "mean_share_above": float("nan"), "mean_area_above": float("nan"),
                              "upper_fraction": float("nan")}
            continue
        summary[label] = {
            "faces": int(len(values)),
            "mean_share_above": round(float(values[:, 0].mean()), 4),
            "mean_area_above": round(float(values[:, 1].mean()), 4),
            "upper_fraction": round(float((values[:, 0] > values[:, 1]).mean()), 4),
        }
        if drops is not None and len(drops.get(label, ())):
            falls = drops[label]
            summary[label].update({
                "drop_upper_masked": round(float(falls[:, 0].mean()), 4),
                "drop_lower_masked": round(float(falls[:, 1].mean()), 4),
                "upper_matters_fraction": round(float((falls[:, 0] > falls[:, 1]).mean()), 4),
            })
    return summary


def plot_relevancy(image, relevancy: Relevancy, ax: Axes | None = None, alpha: float = 0.5, cmap: str = "jet",
                   title: str | None = None) -> Figure:
    """Overlay a relevancy map on the face it explains.

    Args:
        image: the face given to [`explain`] (a PIL image, an (H, W, 3) uint8 array or a path).
        relevancy: its [`Relevancy`].
        ax: the axes to draw in; `None` makes a new figure.
        alpha: opacity of the map over the face.
        cmap: a matplotlib colour map name.
        title: the axes' title; `None` gives the text and its score.

    Returns:
        The `matplotlib.figure.Figure` drawn in.
    """
    picture = np.asarray(load_rgb_image(image))
    if picture.shape[:2] != relevancy.image_map.shape:
        raise ValueError(
            f"the image is {picture.shape[1]}x{picture.shape[0]} but the relevancy map is "
            f"{relevancy.image_map.shape[1]}x{relevancy.image_map.shape[0]}: pass the image that was explained."
        )
    if ax is None:
        figure = Figure(figsize=(3.0, 3.3), layout="constrained")
        ax = figure.subplots()
    ax.imshow(picture)
    ax.imshow(relevancy.image_map, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0)
    ax.set_title(f"{relevancy.text}\n{relevancy.score:.3f}" if title is None else title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax.figure


def plot_relevancy_grid(images: Sequence, relevancies: Sequence[Sequence[Relevancy]],
                        column_titles: Sequence[str] | None = None, panel_size: float = 1.6,
                        alpha: float = 0.5) -> Figure:
    """A grid like the paper's Fig. 4: one row per face, its plain image first, then one overlay per label.

    Args:
        images: the faces, one per row.
        relevancies: per face, its [`Relevancy`]s, the same number for every face (the columns).
        column_titles: a title per relevancy column (e.g. the AU ids); `None` uses the first row's texts.
        panel_size: the side of each panel, in inches.
        alpha: opacity of the maps.

    Returns:
        A `matplotlib.figure.Figure` (built without pyplot) with `len(images)` rows of `1 + columns` axes.
    """
    if not len(images) or len(images) != len(relevancies):
        raise ValueError(f"need one row of relevancies per image, got {len(images)} images and "
                         f"{len(relevancies)} rows.")
    columns = len(relevancies[0])
    for index, row in enumerate(relevancies):
        if len(row) != columns or not columns:
            raise ValueError(f"row {index} has {len(row)} relevancies; every row needs the same number (at least 1, "
                             f"{columns} in row 0).")
    titles = list(column_titles) if column_titles is not None else [r.text for r in relevancies[0]]
    if len(titles) != columns:
        raise ValueError(f"got {len(titles)} column titles for {columns} columns.")
    figure = Figure(figsize=(panel_size * (columns + 1), panel_size * len(images) + 0.4), layout="constrained")
    axes = figure.subplots(len(images), columns + 1, squeeze=False)
    for row, (image, maps) in enumerate(zip(images, relevancies)):
        axes[row, 0].imshow(np.asarray(load_rgb_image(image)))
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        for column, relevancy in enumerate(maps):
            plot_relevancy(image, relevancy, ax=axes[row, column + 1], alpha=alpha,
                           title=f"{titles[column]}\n{relevancy.score:.2f}" if row == 0 else f"{relevancy.score:.2f}")
    axes[0, 0].set_title("face", fontsize=8)
    return figure


def plot_token_relevance(relevancy: Relevancy, ax: Axes | None = None) -> Figure:
    """A bar per word token of the explained text, its relevance to the pooled text feature (start/end tokens
    left out)."""
    words = list(range(1, len(relevancy.tokens) - 1))
    if ax is None:
        figure = Figure(figsize=(max(3.0, 0.5 * len(words) + 1.0), 2.4), layout="constrained")
        ax = figure.subplots()
    ax.bar(range(len(words)), [float(relevancy.token_relevance[i]) for i in words], color="tab:orange")
    ax.set_xticks(range(len(words)), [relevancy.tokens[i].replace("</w>", "") for i in words], rotation=60,
                  fontsize=8)
    ax.set_ylabel("relevance")
    ax.set_title(relevancy.text, fontsize=8)
    return ax.figure

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

Overlay it with [`clef_hf.visualization.plot_relevancy`].
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .image_inputs import load_rgb_image
from .vocabulary import fill_template

__all__ = ["Relevancy", "accumulate_relevancy", "explain", "explain_labels", "label_prompt"]


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
            for prompt in prompts:
                results.append(_explain_one(model, tokenizer, pixel_values, prompt, grid, image.size))
    finally:
        model.train(was_training)
    return results


def explain(model, processor, image, label: str | None = None, text: str | None = None) -> Relevancy:
    """The relevancy map of one face image for one label (id or name) or one text; see [`explain_labels`]."""
    if (label is None) == (text is None):
        raise ValueError("pass exactly one of label=... (a label id or name) and text=...")
    labels, texts = ([label], []) if label is not None else ([], [text])
    return explain_labels(model, processor, image, labels, texts)[0]


def _explain_one(model, tokenizer, pixel_values, prompt: str, grid: int, size: tuple[int, int]) -> Relevancy:
    text_inputs = tokenizer([prompt], truncation=True, max_length=model.config.text_config.max_position_embeddings,
                            return_tensors="pt")
    input_ids = text_inputs["input_ids"].to(model.device)
    vision = model.vision_model(pixel_values=pixel_values, output_attentions=True)
    text = model.text_model(input_ids=input_ids, output_attentions=True)
    image_embeds = nn.functional.normalize(model.visual_projection(vision.pooler_output), dim=-1)
    text_embeds = nn.functional.normalize(model.text_projection(text.pooler_output), dim=-1)
    score = (image_embeds * text_embeds).sum()
    attentions = list(vision.attentions) + list(text.attentions)
    gradients = torch.autograd.grad(score, attentions)
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

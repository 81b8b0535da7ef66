"""The losses of CLEF (Zhang et al., ICCV 2023, Sec. 3), one pure function per equation, and the image-text loss of
the face-language starting point before them (stage 0: FaRL's objective, which is CLIP's).

Every function takes features (not a model) and returns a scalar tensor. Features are L2-normalised inside, so callers
pass projected, un-normalised embeddings. Temperatures may be floats or 0-dim tensors; a tensor carries its gradient
(the learnable τ of Eq. 3-5).

Gathering features across processes for the global batch is not done here: the training loop gathers, then calls these.
"""

import torch
import torch.nn.functional as F


def cosine_logits(features_a: torch.Tensor, features_b: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Cosine similarities divided by a temperature: `norm(a) @ norm(b).T / temperature`.

    Args:
        features_a: (n, d) features.
        features_b: (m, d) features.
        temperature: scalar.

    Returns:
        (n, m) logits.
    """
    return F.normalize(features_a, dim=-1) @ F.normalize(features_b, dim=-1).T / temperature


def image_text_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    temperature: float | torch.Tensor,
) -> torch.Tensor:
    """Stage 0, the symmetric image-text InfoNCE loss of CLIP (Radford et al., 2021) that FaRL (Zheng et al., CVPR
    2022) pre-trains face encoders with. It is not one of CLEF's equations: it trains the starting point of stage 1.

    Row i of `image_features` and row i of `text_features` are an image and its caption; every other row of the
    batch is a negative. With `s_ij = z^I_i · z^T_j / τ` on normalised features the loss is
    `1/2 [ -1/n Σ_i log softmax_j(s_ij)[i]  -  1/n Σ_j log softmax_i(s_ij)[j] ]`, the mean of the image->text and
    text->image cross-entropies.

    Args:
        image_features: (n, d) image features z^I.
        text_features: (n, d) caption features z^T, row i describing image i.
        temperature: τ, e.g. the model's learnable `temperature` (CLIP's `1 / logit_scale.exp()`).

    Returns:
        Scalar loss.
    """
    if image_features.shape != text_features.shape or image_features.dim() != 2:
        raise ValueError(
            f"image_text_contrastive_loss needs one caption per image, as (n, d) image and text features; got "
            f"image features {tuple(image_features.shape)} and text features {tuple(text_features.shape)}."
        )
    logits = cosine_logits(image_features, text_features, temperature)  # (n, n): images x captions
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2.0


def supervised_contrastive_loss(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor = 0.25,
    labels_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 1, the cross-modal supervised contrastive loss L^sup_αβ at a fixed temperature ε.

    The anchors are the n rows of `features_a` (modality α). The contrast set is all 2n rows of `features_a` and
    `features_b` (modality β, with the same labels as `features_a` row by row) except the anchor itself. An anchor's
    positives are the contrast rows that share its label; its term is the mean negative log-probability of its
    positives, and the loss is the mean over the n anchors. An anchor without positives contributes 0 and still counts
    in the mean.

    This is the supervised contrastive loss of Khosla et al. (2020) with the first view as anchors
    (`contrast_mode="one"`) and `base_temperature == temperature`.

    Args:
        features_a: (n, d) anchor features, e.g. image features z^I.
        features_b: (n, d) second-view features, e.g. augmented-image features z^Ĩ or activity-text features z^A.
        labels: (n,) integer labels (activity ids), shared by row i of both feature sets.
        temperature: ε, 0.25 in the paper.
        labels_b: (m,) labels of the rows of `features_b` when they are not those of `features_a` (then
            `features_b` may have m != n rows, e.g. one text per activity). Only with distinct labels can an anchor
            be left without positives.

    Returns:
        Scalar loss.
    """
    n = features_a.shape[0]
    labels_b = labels if labels_b is None else labels_b
    if labels.shape != (n,) or labels_b.shape != (features_b.shape[0],):
        raise ValueError(
            f"supervised_contrastive_loss needs features_a (n, d) with labels (n,) and features_b (m, d) with "
            f"labels_b (m,); got {tuple(features_a.shape)}, {tuple(labels.shape)}, {tuple(features_b.shape)} and "
            f"{tuple(labels_b.shape)}."
        )
    contrast = torch.cat([features_a, features_b], dim=0)  # (n + m, d)
    logits = cosine_logits(features_a, contrast, temperature)  # (n, n + m)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[:, :n] = torch.eye(n, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(is_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)

    contrast_labels = torch.cat([labels, labels_b])
    is_positive = (labels[:, None] == contrast_labels[None, :]) & ~is_self
    num_positives = is_positive.sum(dim=1)
    # masked_fill rather than multiplication: log_prob is -inf on the diagonal and -inf * 0 is nan.
    positive_log_prob = log_prob.masked_fill(~is_positive, 0.0).sum(dim=1)
    per_anchor = -positive_log_prob / num_positives.clamp(min=1)
    return per_anchor.mean()


def pretraining_loss(
    image_features: torch.Tensor,
    augmented_image_features: torch.Tensor,
    activity_features: torch.Tensor,
    activity_labels: torch.Tensor,
    temperature: float | torch.Tensor = 0.25,
) -> torch.Tensor:
    """Eq. 2, the weakly-supervised pre-training loss L_pre = L^sup_IĨ + L^sup_IA.

    Images of the same recorded activity are positives, across two augmented views (L_IĨ) and between images and the
    texts that describe their activity (L_IA).

    Args:
        image_features: (n, d) features z^I of the first augmented view.
        augmented_image_features: (n, d) features z^Ĩ of the second augmented view.
        activity_features: (n, d) text features z^A of each image's activity description (rows repeat per activity).
        activity_labels: (n,) activity ids.
        temperature: ε, 0.25 in the paper.

    Returns:
        Scalar loss.
    """
    image_image = supervised_contrastive_loss(image_features, augmented_image_features, activity_labels, temperature)
    image_activity = supervised_contrastive_loss(image_features, activity_features, activity_labels, temperature)
    return image_image + image_activity


def name_description_loss(
    description_features: torch.Tensor,
    name_features: torch.Tensor,
    temperature: float | torch.Tensor,
) -> torch.Tensor:
    """Eq. 3, the self-supervised name-description loss L_DN.

    Each of the C label descriptions is classified among the C label names, its own name being the target:
    `-1/C Σ_i log softmax_j(z^D_i · z^N_j / τ)[i]`.

    Args:
        description_features: (C, d) text features z^D of the label descriptions.
        name_features: (C, d) text features z^N of the label names, aligned with the descriptions.
        temperature: the learnable τ.

    Returns:
        Scalar loss.
    """
    if description_features.shape != name_features.shape:
        raise ValueError(
            f"name_description_loss needs one description per name; got description features "
            f"{tuple(description_features.shape)} and name features {tuple(name_features.shape)}."
        )
    logits = cosine_logits(description_features, name_features, temperature)  # (C, C)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets)


def _class_weights(class_weights: torch.Tensor | None, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    if class_weights is None:
        return torch.ones(num_classes, dtype=like.dtype, device=like.device)
    class_weights = torch.as_tensor(class_weights, dtype=like.dtype, device=like.device)
    if class_weights.shape != (num_classes,):
        raise ValueError(f"class_weights must have shape ({num_classes},), got {tuple(class_weights.shape)}.")
    return class_weights


def expression_loss(
    image_features: torch.Tensor,
    name_features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 4, the expression-recognition loss L^fe_IN: class-weighted cross-entropy over image-name similarities.

    `-1/B Σ_i w_{y_i} log softmax_c(z^I_i · z^N_c / τ)[y_i]`. As in the paper the sum is divided by the batch size B,
    not by the sum of the weights (which is what `F.cross_entropy(weight=...)` would do).

    Args:
        image_features: (B, d) image features z^I.
        name_features: (C, d) text features z^N of the C label names.
        labels: (B,) class indices in [0, C).
        temperature: the learnable τ.
        class_weights: (C,) weights w_c, or None for all ones.

    Returns:
        Scalar loss.
    """
    num_classes = name_features.shape[0]
    if labels.dim() != 1 or labels.shape[0] != image_features.shape[0]:
        raise ValueError(f"expression labels must have shape ({image_features.shape[0]},), got {tuple(labels.shape)}.")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"expression labels must lie in [0, {num_classes}), got values from {int(labels.min())} to "
            f"{int(labels.max())}."
        )
    logits = cosine_logits(image_features, name_features, temperature)  # (B, C)
    log_probs = logits.log_softmax(dim=-1)
    weights = _class_weights(class_weights, num_classes, logits)
    target_log_probs = log_probs.gather(1, labels[:, None]).squeeze(1)
    return -(weights[labels] * target_log_probs).sum() / image_features.shape[0]


def au_loss(
    image_features: torch.Tensor,
    name_features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 5, the action-unit loss L^au_IN: weighted binary cross-entropy on image-name similarities.

    `-1/B Σ_i Σ_c [w_c y_ic log σ(s_ic) + (1 - y_ic) log(1 - σ(s_ic))]` with `s_ic = z^I_i · z^N_c / τ`. As in the paper
    the weight w_c applies to the positive term only, and the sum over AUs is divided by the batch size B.

    Unknown labels (-1; BP4D codes them 9) are ignored: their entries contribute nothing. A batch whose labels are all
    unknown gives a loss of 0 with zero gradients.

    Args:
        image_features: (B, d) image features z^I.
        name_features: (C, d) text features z^N of the C AU names.
        labels: (B, C) with 1 (present), 0 (absent) or -1 (unknown).
        temperature: the learnable τ.
        class_weights: (C,) weights w_c, or None for all ones.

    Returns:
        Scalar loss.
    """
    num_classes = name_features.shape[0]
    if labels.shape != (image_features.shape[0], num_classes):
        raise ValueError(
            f"AU labels must have shape (batch, num_aus) = ({image_features.shape[0]}, {num_classes}), got "
            f"{tuple(labels.shape)}."
        )
    bad = ~((labels == 1) | (labels == 0) | (labels == -1))
    if bad.any():
        raise ValueError(f"AU labels must be 1, 0 or -1 (unknown), got {labels[bad].unique().tolist()}.")
    logits = cosine_logits(image_features, name_features, temperature)  # (B, C)
    weights = _class_weights(class_weights, num_classes, logits)
    known = labels >= 0
    targets = labels.clamp(min=0).to(logits.dtype)
    per_entry = weights * targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)
    return -(per_entry * known).sum() / image_features.shape[0]


def intensity_targets(intensities: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """The target distribution q over the L intensity levels of each labelled intensity y, for Eq. I.

    An intensity on a level is that level (one-hot). One between two adjacent levels `v_l <= y <= v_{l+1}` splits its
    mass between them linearly, `q_{l+1} = (y - v_l) / (v_{l+1} - v_l)` and `q_l = 1 - q_{l+1}`, so that the expected
    level `Σ_l q_l v_l` is y itself (synthfaces' intensities are continuous). Values outside `[v_0, v_{L-1}]` are
    clamped to it.

    Args:
        intensities: (...) intensities; unknown entries (< 0) may hold any value, the caller masks them.
        levels: (L,) increasing level values v_l.

    Returns:
        (..., L) distributions (rows sum to 1).
    """
    y = intensities.clamp(min=float(levels[0]), max=float(levels[-1]))
    upper = torch.searchsorted(levels, y.contiguous(), right=False).clamp(min=1, max=len(levels) - 1)
    lower = upper - 1
    low_value, high_value = levels[lower], levels[upper]
    weight_upper = (y - low_value) / (high_value - low_value)
    targets = torch.zeros(*y.shape, len(levels), dtype=y.dtype, device=y.device)
    targets.scatter_(-1, lower[..., None], (1 - weight_upper)[..., None])
    targets.scatter_add_(-1, upper[..., None], weight_upper[..., None])
    return targets


def au_intensity_loss(
    image_features: torch.Tensor,
    level_features: torch.Tensor,
    intensities: torch.Tensor,
    levels: torch.Tensor,
    temperature: float | torch.Tensor,
) -> torch.Tensor:
    """Eq. I (not in the paper; the poster's intensity extension): a softmax over the intensity phrases of each AU.

    Each AU c has L phrases, one per level ("no", "a trace of", "slight", ... lip corner puller), with text features
    z^P_cl. With `s_icl = z^I_i · z^P_cl / τ` on normalised features and `p_icl = softmax_l(s_icl)`, the loss is the
    cross-entropy to the labelled level, summed over the known AUs and divided by the batch size as Eq. 5:

        L^int_IP = -1/B Σ_i Σ_c [y_ic known] Σ_l q_icl log p_icl,

    with q_ic the target of `intensity_targets` (one-hot on a level; split between the two adjacent levels for a
    fractional intensity). The predicted intensity is the expected level `ŷ_ic = Σ_l p_icl v_l` (a float in
    `[v_0, v_{L-1}]`). Unknown intensities (< 0, the schema's -1) contribute nothing.

    Args:
        image_features: (B, d) image features z^I.
        level_features: (C, L, d) text features z^P of the C AUs' L intensity phrases.
        intensities: (B, C) labelled intensities (0-5), or < 0 where unknown.
        levels: (L,) increasing level values v_l.
        temperature: the learnable τ.

    Returns:
        Scalar loss.
    """
    batch, num_aus = image_features.shape[0], level_features.shape[0]
    if level_features.dim() != 3 or intensities.shape != (batch, num_aus) or levels.shape != level_features.shape[1:2]:
        raise ValueError(
            f"au_intensity_loss needs image features (B, d), level features (C, L, d), intensities (B, C) and levels "
            f"(L,); got {tuple(image_features.shape)}, {tuple(level_features.shape)}, {tuple(intensities.shape)} and "
            f"{tuple(levels.shape)}."
        )
    if torch.isnan(intensities).any():
        raise ValueError("au_intensity_loss got NaN intensities; mark unknown intensities with -1.")
    logits = intensity_logits(image_features, level_features, temperature)  # (B, C, L)
    levels = levels.to(logits.dtype)
    known = intensities >= 0
    targets = intensity_targets(intensities.to(logits.dtype), levels)  # (B, C, L)
    per_entry = -(targets * logits.log_softmax(dim=-1)).sum(dim=-1)  # (B, C)
    return (per_entry * known).sum() / batch


def intensity_logits(
    image_features: torch.Tensor, level_features: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """`s_icl = norm(z^I_i) · norm(z^P_cl) / τ`: (B, d) image and (C, L, d) phrase features -> (B, C, L) logits."""
    image = F.normalize(image_features, dim=-1)
    phrases = F.normalize(level_features, dim=-1)
    return torch.einsum("bd,cld->bcl", image, phrases) / temperature


def expected_intensity(logits: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """The predicted intensity of Eq. I, `Σ_l softmax_l(s_icl) v_l`: (B, C, L) logits and (L,) levels -> (B, C)."""
    return logits.softmax(dim=-1) @ levels.to(logits.dtype)


def fine_tuning_loss(
    image_name_loss: torch.Tensor,
    name_description_loss: torch.Tensor,
    image_name_loss_weight: float = 2.0,
) -> torch.Tensor:
    """Eq. 6, the fine-tuning loss L_fine = (λ L^α_IN + L_DN) / 2, with α the task (Eq. 4 or Eq. 5).

    Args:
        image_name_loss: scalar L^α_IN.
        name_description_loss: scalar L_DN (Eq. 3).
        image_name_loss_weight: λ, 2.0 in the paper.

    Returns:
        Scalar loss.
    """
    return (image_name_loss_weight * image_name_loss + name_description_loss) / 2.0


__all__ = [
    "au_intensity_loss",
    "au_loss",
    "cosine_logits",
    "expected_intensity",
    "expression_loss",
    "fine_tuning_loss",
    "image_text_contrastive_loss",
    "intensity_logits",
    "intensity_targets",
    "name_description_loss",
    "pretraining_loss",
    "supervised_contrastive_loss",
]

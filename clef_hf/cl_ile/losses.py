"""The losses of CL-ILE (Lian et al., BMVC 2023, Sec. 3.2-3.3), one pure function per equation.

Stage I trains an ID feature encoder with identity-label embeddings (ILEs, one set of C AU embeddings per training
subject): Eq. 1 (ID loss on the ILEs), Eq. 2 (weighted BCE over AUs) and their sum Eq. 3. Stage II trains the general
feature encoder and the AU embeddings: Eq. 2 again, Eq. 4 (orthogonality to the frozen ID features), Eq. 5 (supervised
contrastive loss between an image's feature and its AU embeddings) and their sum Eq. 6.

Every function takes tensors (not a model) and returns a scalar tensor. Every default is the paper's value (Sec. 4.1)
and every one is a keyword argument. Where the paper takes a cosine similarity the vectors are L2-normalised here;
Eq. 2 uses an inner product (see its docstring). Gathering features across processes is left to the training loop.
"""

import torch
import torch.nn.functional as F

from clef_hf.losses import cosine_logits

EMBEDDING_DIM = 512
"""D, the size of every CL-ILE embedding: "All embeddings in our method have a consistent dimension of 512" (Sec. 4.1).
The losses accept any D; this is the value to build ILEs, AU embeddings and feature projections with."""


def _check_au_labels(function: str, labels: torch.Tensor, batch_size: int, num_aus: int) -> None:
    if labels.shape != (batch_size, num_aus):
        raise ValueError(
            f"{function} needs labels of shape (batch, num_aus) = ({batch_size}, {num_aus}), got {tuple(labels.shape)}."
        )
    bad = ~((labels == 1) | (labels == 0) | (labels == -1))
    if bad.any():
        raise ValueError(f"{function} needs labels of 1, 0 or -1 (unknown), got {labels[bad].unique().tolist()}.")


def _check_features(function: str, name: str, features: torch.Tensor) -> None:
    if features.dim() != 2:
        raise ValueError(f"{function} needs {name} of shape (batch, dim), got {tuple(features.shape)}.")


def _check_scalar(function: str, name: str, value: torch.Tensor) -> None:
    if torch.as_tensor(value).dim() != 0:
        raise ValueError(f"{function} needs a scalar (0-dim) {name}, got shape {tuple(torch.as_tensor(value).shape)}.")


def identity_loss(identity_label_embeddings: torch.Tensor) -> torch.Tensor:
    """Eq. 1, the ID loss L_ID on the identity-label embeddings (ILEs) of stage I.

    Each ILE_{i,j} (subject i, AU j) is L2-normalised (Sec. 3.2: the ILEs are "normalized during training"). With
    m_i the mean of subject i's C AU embeddings and m_j the mean of AU j's embeddings over the N subjects:

        L_ID = log( Σ_i Σ_j |cos(ILE_{i,j}, m_j)| / Σ_i Σ_j |cos(ILE_{i,j}, m_i)| )

    Minimising it pulls each subject's AU embeddings together (towards m_i) and pushes the same AU of different
    subjects apart (towards orthogonality with m_j, since the similarities enter as absolute values).

    The text reads the fraction the other way up: the similarities to the subject means ILĒ_i ("the mean across all
    AUs of subject i") over those to the AU means ILĒ_j. Minimised, that would scatter each subject's AU embeddings
    and gather each AU across subjects: the opposite of the aim the paper states just before Eq. 1 ("encourages the
    aggregation of different AU embeddings belonging to the same subject while pushing apart AU embeddings of the same
    kind associated with different subjects") and of Fig. 3 (ILEs cluster by subject, and are dispersed by AU). We take
    the reading that matches the stated aim; it is the text's expression with its sign flipped.

    Args:
        identity_label_embeddings: (N, C, D) ILEs of the N training subjects, C AUs, D = 512 in the paper (Sec. 4.1).
            Not necessarily normalised: each D-vector is L2-normalised here. All N subjects enter, not only those in
            the batch (the sums of Eq. 1 run over i = 1..N).

    Returns:
        Scalar loss. 0 when N = 1 and C = 1; negative when the ILEs cluster more by subject than by AU.
    """
    if identity_label_embeddings.dim() != 3 or 0 in identity_label_embeddings.shape:
        raise ValueError(
            f"identity_loss needs identity_label_embeddings of shape (num_subjects, num_aus, dim), all non-empty, got "
            f"{tuple(identity_label_embeddings.shape)}."
        )
    embeddings = F.normalize(identity_label_embeddings, dim=-1)  # (N, C, D)
    subject_means = F.normalize(embeddings.mean(dim=1, keepdim=True), dim=-1)  # (N, 1, D): m_i
    au_means = F.normalize(embeddings.mean(dim=0, keepdim=True), dim=-1)  # (1, C, D): m_j
    to_au_means = (embeddings * au_means).sum(dim=-1).abs().sum()
    to_subject_means = (embeddings * subject_means).sum(dim=-1).abs().sum()
    return torch.log(to_au_means / to_subject_means)


def au_bce_loss(
    features: torch.Tensor,
    au_embeddings: torch.Tensor,
    labels: torch.Tensor,
    au_weights: torch.Tensor | None = None,
    subject_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 2, the weighted binary cross-entropy L_BCE over AUs, used in both stages.

    For an image with feature F and AU embeddings AU_c, the logit of AU c is the inner product s_c = F · AU_c, and

        L_BCE = -1/C Σ_c w_c [y_c log σ(s_c) + (1 - y_c) log(1 - σ(s_c))],

    averaged over the batch. In stage I, F is F^ID_emb and AU_c = AU_c^{Sub_i} is the ILE of the image's subject
    (pass the (N, C, D) ILEs and `subject_ids`); in stage II, F is F^G_emb and AU_c the shared AU embedding AU^G_c
    (pass (C, D)). Unlike CLEF's Eq. 5 (`clef_hf.losses.au_loss`), w_c weights both the positive and the negative term.

    Normalisation: the AU embeddings are L2-normalised (Sec. 3.2 normalises the ILEs; stage II's AU embeddings take
    their place in the same equation); the features are not. The paper writes an inner product here and in Sec. 3.1
    (p̂^c is "the inner product of F^G_emb and AU^c_emb") where Eqs. 1, 4 and 5 say cosine similarity, so the
    feature's norm acts as the logit scale; with both sides unit-norm σ could not leave [0.27, 0.73].

    The weights w_c come from Selective Learning (Hand et al., 2018) towards a uniform distribution, computed per
    batch (Sec. 3.2). That is a property of the batch, not part of Eq. 2, so the caller passes them.

    Unknown labels (-1) contribute nothing; the mean still divides by B·C, as Eq. 2's 1/C does for every image.

    Args:
        features: (B, D) feature embeddings F^ID_emb (stage I) or F^G_emb (stage II), used as they are.
        au_embeddings: (C, D) AU embeddings shared by all images, or (N, C, D) ILEs indexed by `subject_ids`.
        labels: (B, C) with 1 (present), 0 (absent) or -1 (unknown).
        au_weights: (C,) weights w_c, or (B, C) per image and AU; None for all ones.
        subject_ids: (B,) integer subject indices in [0, N), required with (N, C, D) `au_embeddings` only.

    Returns:
        Scalar loss.
    """
    _check_features("au_bce_loss", "features", features)
    if au_embeddings.dim() == 3:
        if subject_ids is None:
            raise ValueError(
                "au_bce_loss needs subject_ids (batch,) with identity-label au_embeddings of shape "
                f"(num_subjects, num_aus, dim) = {tuple(au_embeddings.shape)}."
            )
        if subject_ids.shape != (features.shape[0],) or subject_ids.is_floating_point():
            raise ValueError(
                f"au_bce_loss needs integer subject_ids of shape ({features.shape[0]},), got {subject_ids.dtype} of "
                f"shape {tuple(subject_ids.shape)}."
            )
        if subject_ids.numel() and (subject_ids.min() < 0 or subject_ids.max() >= au_embeddings.shape[0]):
            raise ValueError(
                f"au_bce_loss needs subject_ids in [0, {au_embeddings.shape[0]}), got values from "
                f"{int(subject_ids.min())} to {int(subject_ids.max())}."
            )
    elif au_embeddings.dim() == 2:
        if subject_ids is not None:
            raise ValueError(
                f"au_bce_loss takes subject_ids only with (num_subjects, num_aus, dim) au_embeddings, got "
                f"au_embeddings of shape {tuple(au_embeddings.shape)}."
            )
    else:
        raise ValueError(
            f"au_bce_loss needs au_embeddings of shape (num_aus, dim) or (num_subjects, num_aus, dim), got "
            f"{tuple(au_embeddings.shape)}."
        )
    if au_embeddings.shape[-1] != features.shape[1]:
        raise ValueError(
            f"au_bce_loss needs au_embeddings of the features' dim {features.shape[1]}, got "
            f"{tuple(au_embeddings.shape)}."
        )
    num_aus = au_embeddings.shape[-2]
    _check_au_labels("au_bce_loss", labels, features.shape[0], num_aus)

    embeddings = F.normalize(au_embeddings, dim=-1)
    if embeddings.dim() == 3:
        logits = torch.einsum("bd,bcd->bc", features, embeddings[subject_ids])  # (B, C)
    else:
        logits = features @ embeddings.T  # (B, C)
    if au_weights is None:
        weights = torch.ones_like(logits)
    else:
        weights = torch.as_tensor(au_weights, dtype=logits.dtype, device=logits.device)
        if weights.shape not in ((num_aus,), tuple(logits.shape)):
            raise ValueError(
                f"au_bce_loss needs au_weights of shape ({num_aus},) or {tuple(logits.shape)}, got "
                f"{tuple(weights.shape)}."
            )
    targets = labels.clamp(min=0).to(logits.dtype)
    per_entry = targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)
    return -(weights * per_entry * (labels >= 0)).sum() / labels.numel()


def selective_learning_weights(labels: torch.Tensor, target_rate: float = 0.5, eps: float = 1e-6) -> torch.Tensor:
    """The per-image, per-AU weights w_c of Eq. 2: Selective Learning (Hand et al., AAAI 2018) towards a uniform
    distribution, computed on the batch (Sec. 3.2).

    With b_c the share of positives among the batch's known labels of AU c and t the target rate (0.5, "the uniform
    distribution"), positives of AU c weigh t / b_c and negatives (1 - t) / (1 - b_c), so that each AU's positives
    and negatives carry the target's shares of the loss. An AU with no known label, no positive or no negative in the
    batch keeps weight 1 (nothing can be rebalanced); unknown labels (-1) get weight 0. Selective Learning also drops
    samples of the majority; this is its weighting, which is what Eq. 2's w_c takes.

    Args:
        labels: (B, C) with 1 (present), 0 (absent) or -1 (unknown).
        target_rate: t, the target share of positives.
        eps: floor on b_c and 1 - b_c.

    Returns:
        (B, C) weights, without gradient.
    """
    if labels.dim() != 2:
        raise ValueError(f"selective_learning_weights needs labels of shape (batch, num_aus), got {tuple(labels.shape)}.")
    if not 0 < target_rate < 1:
        raise ValueError(f"selective_learning_weights needs a target_rate in (0, 1), got {target_rate}.")
    known = (labels >= 0).float()
    positive = (labels == 1).float()
    negative = known - positive
    rate = positive.sum(0) / known.sum(0).clamp(min=1)  # (C,) b_c
    balanced = (positive.sum(0) > 0) & (negative.sum(0) > 0)  # (C,) AUs that can be rebalanced
    positive_weight = torch.where(balanced, target_rate / rate.clamp(min=eps), torch.ones_like(rate))
    negative_weight = torch.where(balanced, (1 - target_rate) / (1 - rate).clamp(min=eps), torch.ones_like(rate))
    return (positive * positive_weight + negative * negative_weight).detach()


def stage_one_loss(bce_loss: torch.Tensor, identity_loss: torch.Tensor, bce_weight: float = 0.4) -> torch.Tensor:
    """Eq. 3, the stage-I loss L_1 = λ L_BCE + (1 - λ) L_ID.

    Args:
        bce_loss: scalar L_BCE (Eq. 2) on F^ID_emb and the ILEs.
        identity_loss: scalar L_ID (Eq. 1).
        bce_weight: λ, 0.4 in the paper ("λ was set to 0.4 empirically to balance losses in stage one", Sec. 4.1).

    Returns:
        Scalar loss.
    """
    _check_scalar("stage_one_loss", "bce_loss", bce_loss)
    _check_scalar("stage_one_loss", "identity_loss", identity_loss)
    return bce_weight * bce_loss + (1 - bce_weight) * identity_loss


def orthogonality_loss(
    identity_features: torch.Tensor, general_features: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Eq. 4, the orthogonality loss L_Orth = 1/|B| Σ log |cos(F^ID_emb, F^G_emb)| of stage II.

    Minimising it drives each image's general feature towards orthogonality with its person-specific feature.

    The loss is unbounded below: log 0 = -inf at exact orthogonality. `eps`, which is not in the paper, floors |cos| so
    that the value and the gradients stay finite; for |cos| >= eps the function is exactly Eq. 4. Its gradient is
    1/|cos| times that of |cos|: with a tiny floor, features near orthogonality give gradients hundreds of times the
    BCE's, and on the synthetic faces stage II then does not learn; below the floor the term is constant and has no
    gradient (docs/study/cl_ile.md).

    F^ID_emb comes from the stage-I encoder, frozen in stage II (Sec. 3.3): compute it under `torch.no_grad()` or pass
    it detached. This function does not detach it.

    Args:
        identity_features: (B, D) person-specific features F^ID_emb.
        general_features: (B, D) general features F^G_emb of the same images, row by row.
        eps: floor on |cos| (not in the paper).

    Returns:
        Scalar loss, at most 0 and at least log(eps).
    """
    _check_features("orthogonality_loss", "identity_features", identity_features)
    if general_features.shape != identity_features.shape:
        raise ValueError(
            f"orthogonality_loss needs general_features of the identity_features' shape "
            f"{tuple(identity_features.shape)}, got {tuple(general_features.shape)}."
        )
    cosine = (F.normalize(identity_features, dim=-1) * F.normalize(general_features, dim=-1)).sum(dim=-1)  # (B,)
    return torch.log(cosine.abs().clamp(min=eps)).mean()


def label_contrastive_loss(
    features: torch.Tensor,
    au_embeddings: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor = 2.0,
) -> torch.Tensor:
    """Eq. 5, the supervised contrastive loss L_Contra between an image's feature and the AU embeddings of stage II.

    The image's feature F^G_emb is the anchor, the embeddings of its present AUs P(y) are the positives and all C AU
    embeddings form the contrast set:

        L_Contra = 1/|B| Σ_{(F, y) in B} 1/|P(y)| Σ_{p in P(y)} -log(exp(cos(F, AU_p)/τ) / Σ_c exp(cos(F, AU_c)/τ))

    τ divides the cosine inside the exponential, as written; with τ = 2 (Sec. 4.1) the logits lie in [-0.5, 0.5]. The
    text's "F^G_omb" under the sum is an extraction slip for F^G_emb.

    An image without a present AU (all-zero labels) has an empty P(y): it contributes 0 and still counts in 1/|B|.
    Unknown labels (-1) are not positives; their AUs stay in the denominator, which runs over all C AUs.

    Args:
        features: (B, D) general features F^G_emb.
        au_embeddings: (C, D) AU embeddings AU^G.
        labels: (B, C) with 1 (present), 0 (absent) or -1 (unknown).
        temperature: τ, the "scaling parameter", 2 in the paper (Sec. 4.1). A 0-dim tensor carries its gradient.

    Returns:
        Scalar loss.
    """
    _check_features("label_contrastive_loss", "features", features)
    if au_embeddings.dim() != 2 or au_embeddings.shape[1] != features.shape[1]:
        raise ValueError(
            f"label_contrastive_loss needs au_embeddings of shape (num_aus, {features.shape[1]}), got "
            f"{tuple(au_embeddings.shape)}."
        )
    _check_au_labels("label_contrastive_loss", labels, features.shape[0], au_embeddings.shape[0])
    log_probs = cosine_logits(features, au_embeddings, temperature).log_softmax(dim=-1)  # (B, C)
    is_positive = labels == 1
    num_positives = is_positive.sum(dim=1)
    per_image = -(log_probs * is_positive).sum(dim=1) / num_positives.clamp(min=1)
    return per_image.mean()


def stage_two_loss(
    bce_loss: torch.Tensor,
    orthogonality_loss: torch.Tensor,
    contrastive_loss: torch.Tensor,
    bce_weight: float = 1.0,
    orthogonality_weight: float = 0.5,
    contrastive_weight: float = 0.4,
) -> torch.Tensor:
    """Eq. 6, the stage-II loss L_2 = λ_1 L_BCE + λ_2 L_Orth + λ_3 L_Contra.

    Args:
        bce_loss: scalar L_BCE (Eq. 2) on F^G_emb and the AU embeddings.
        orthogonality_loss: scalar L_Orth (Eq. 4).
        contrastive_loss: scalar L_Contra (Eq. 5).
        bce_weight: λ_1, 1 in the paper (Sec. 4.1).
        orthogonality_weight: λ_2, 0.5 in the paper (Sec. 4.1).
        contrastive_weight: λ_3, 0.4 in the paper (Sec. 4.1).

    Returns:
        Scalar loss.
    """
    _check_scalar("stage_two_loss", "bce_loss", bce_loss)
    _check_scalar("stage_two_loss", "orthogonality_loss", orthogonality_loss)
    _check_scalar("stage_two_loss", "contrastive_loss", contrastive_loss)
    return bce_weight * bce_loss + orthogonality_weight * orthogonality_loss + contrastive_weight * contrastive_loss


__all__ = [
    "EMBEDDING_DIM",
    "au_bce_loss",
    "identity_loss",
    "label_contrastive_loss",
    "orthogonality_loss",
    "selective_learning_weights",
    "stage_one_loss",
    "stage_two_loss",
]

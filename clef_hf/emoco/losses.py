"""The losses of EmoCo (Sun, Zeng and Shan, FG 2021, Sec. III), one pure function per equation.

EmoCo pre-trains an encoder on expression-labelled faces with two branches: an emotion classifier on the query
embedding q (Eq. 2) and a MoCo-style contrastive loss whose negatives are earlier keys *of the query's own emotion*,
compared after intra-class normalisation around the classifier's prototype of that emotion (Eq. 4 and 5). Eq. 1 adds
the two. Eq. 3, the momentum update of the key encoder, changes parameters rather than computing a loss; it lives in
`clef_hf.emoco.queue.momentum_update`, next to the multi-queue dictionary.

Every function takes features (not a model) and returns a scalar tensor, except `intra_class_normalize` (Eq. 4),
which returns the normalised features. Features are L2-normalised inside (the paper's projection head ends with an L2
normalisation, so q and k are unit vectors; normalising again is a no-op for them). Defaults are the paper's values
(128-d embeddings, Sec. III-B and IV-B3; τ = 0.2 and λ = 1, Sec. IV-B4). Gathering keys across processes is not
done here.
"""

import torch
import torch.nn.functional as F


def _check_labels(labels: torch.Tensor, num_rows: int, num_classes: int, name: str, function: str) -> None:
    if labels.dim() != 1 or labels.shape[0] != num_rows:
        raise ValueError(f"{function}: {name} must have shape ({num_rows},), got {tuple(labels.shape)}.")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{function}: {name} must hold integer class indices, got dtype {labels.dtype}.")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{function}: {name} must lie in [0, {num_classes}) (one per row of classifier_weight), got values from "
            f"{int(labels.min())} to {int(labels.max())}."
        )


def _check_classifier_weight(classifier_weight: torch.Tensor, feature_dim: int, function: str) -> None:
    if classifier_weight.dim() != 2 or classifier_weight.shape[1] != feature_dim:
        raise ValueError(
            f"{function}: classifier_weight must have shape (num_classes, {feature_dim}) to match the features, got "
            f"{tuple(classifier_weight.shape)}."
        )


def _check_features(features: torch.Tensor, name: str, function: str) -> None:
    if features.dim() != 2:
        raise ValueError(f"{function}: {name} must have shape (n, d), got {tuple(features.shape)}.")


def emotion_classification_loss(
    queries: torch.Tensor,
    classifier_weight: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Eq. 2, the emotion-classification loss L_emo = -log softmax_j(w_j · q)[y], averaged over the batch.

    The classifier C is a single fully connected layer with weight W ∈ R^{C×128}; Eq. 2 writes its logits as w_j · q
    with no bias, so the logits here are `normalize(q) @ W.T` (an `nn.Linear(128, C, bias=False)`). W itself is not
    normalised: only its rows' directions serve as prototypes w̃ in Eq. 4. The paper writes the loss of one image; we
    take the mean over the batch.

    Args:
        queries: (B, d) query embeddings q from the online encoder and projection head (d = 128 in the paper).
        classifier_weight: (C, d) weight W of the emotion classifier (C = 7 on AffectNet).
        labels: (B,) emotion labels y in [0, C).

    Returns:
        Scalar loss.
    """
    function = "emotion_classification_loss"
    _check_features(queries, "queries", function)
    _check_classifier_weight(classifier_weight, queries.shape[1], function)
    _check_labels(labels, queries.shape[0], classifier_weight.shape[0], "labels", function)
    logits = F.normalize(queries, dim=-1) @ classifier_weight.T  # (B, C)
    return F.cross_entropy(logits, labels)


def intra_class_normalize(
    features: torch.Tensor,
    classifier_weight: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Eq. 4, the intra-class normalisation N(q) = (q - w̃) / ||q - w̃||, with w̃ = w_y / ||w_y||.

    Each feature is moved into the space centred on the prototype of its own emotion: the L2-normalised row w̃_y of
    the classifier weight W of Eq. 2. The paper says w̃ is "one row" of W without naming it; since the negatives of
    q come from the queue of q's emotion y and Fig. 2 normalises q, k+ and k- "into an emotion-specific space", we take
    the row of the label y for every feature (the query's label for q and k+, the queue's label for k-). The feature
    itself is L2-normalised first, as q is a unit vector in the paper (and as in the reference implementation of
    ANCOR, whose normalisation EmoCo adopts).

    The transform is per sample: a class with a single sample in the batch is normalised like any other. A feature
    equal to its prototype has no direction; it maps to the zero vector (the `eps` of `F.normalize`).

    Args:
        features: (n, d) features q or k.
        classifier_weight: (C, d) weight W of the emotion classifier. Gradients flow into it unless the caller
            detaches it (Eq. 5 does by default).
        labels: (n,) emotion labels in [0, C) choosing each feature's prototype.

    Returns:
        (n, d) unit vectors N(features).
    """
    function = "intra_class_normalize"
    _check_features(features, "features", function)
    _check_classifier_weight(classifier_weight, features.shape[1], function)
    _check_labels(labels, features.shape[0], classifier_weight.shape[0], "labels", function)
    prototypes = F.normalize(classifier_weight, dim=-1)[labels]  # (n, d)
    return F.normalize(F.normalize(features, dim=-1) - prototypes, dim=-1)


def emotion_aware_contrastive_loss(
    queries: torch.Tensor,
    positive_keys: torch.Tensor,
    labels: torch.Tensor,
    negative_keys: torch.Tensor,
    negative_labels: torch.Tensor,
    classifier_weight: torch.Tensor,
    temperature: float | torch.Tensor = 0.2,
    detach_prototypes: bool = True,
) -> torch.Tensor:
    """Eq. 5, the emotion-aware contrastive loss L_cont in the intra-class normalised space, averaged over the batch.

    For query i with emotion y_i, positive key k+_i (the momentum encoder's embedding of another augmentation of the
    same image) and the keys k-_j stored in the queue of emotion y_i:

        L_i = -log( e^{<N(q_i), N(k+_i)>/τ} / (e^{<N(q_i), N(k+_i)>/τ} + Σ_j e^{<N(q_i), N(k-_j)>/τ}) ),

    with N of Eq. 4 around the prototype of y_i. As the paper says (Sec. III-C: "the negative samples are different
    instances from the same emotional category"), the negatives are only the keys whose label equals the query's;
    keys of other emotions are ignored, not used as negatives, and the positive is k+_i, not the queue of y_i.

    The text sums over i = 0..K-1, all K keys of the queue; `negative_keys` holds the filled slots only (see
    `MultiQueueDictionary.keys_and_labels`), so a queue that is not yet full contributes the keys it has. A query
    whose emotion has no stored key gets L_i = -log(e^s / e^s) = 0 and still counts in the mean.

    Keys carry no gradient (MoCo: the key encoder is updated by Eq. 3, not by back-propagation): `positive_keys` and
    `negative_keys` are detached here. The paper does not say whether L_cont back-propagates into W through the
    prototypes. We detach them by default, as the reference implementation of ANCOR does and as Fig. 3 describes
    (minimising L_cont moves q and k towards a fixed w̃); `detach_prototypes=False` lets L_cont train W too.

    Args:
        queries: (B, d) query embeddings q (online encoder).
        positive_keys: (B, d) positive keys k+ (momentum encoder), row i pairs with query i.
        labels: (B,) emotion labels of the queries in [0, C).
        negative_keys: (M, d) keys stored in the multi-queue dictionary (any order; M may be 0).
        negative_labels: (M,) the emotion (queue) of each stored key, in [0, C).
        classifier_weight: (C, d) weight W of the emotion classifier, whose normalised rows are the prototypes.
        temperature: τ, 0.2 in the paper (Sec. IV-B4).
        detach_prototypes: stop L_cont's gradient into `classifier_weight`.

    Returns:
        Scalar loss.
    """
    function = "emotion_aware_contrastive_loss"
    _check_features(queries, "queries", function)
    if positive_keys.shape != queries.shape:
        raise ValueError(
            f"{function}: positive_keys must have the shape of queries {tuple(queries.shape)} (one positive key per "
            f"query), got {tuple(positive_keys.shape)}."
        )
    if negative_keys.dim() != 2 or negative_keys.shape[1] != queries.shape[1]:
        raise ValueError(
            f"{function}: negative_keys must have shape (M, {queries.shape[1]}) to match queries, got "
            f"{tuple(negative_keys.shape)}."
        )
    _check_classifier_weight(classifier_weight, queries.shape[1], function)
    num_classes = classifier_weight.shape[0]
    _check_labels(labels, queries.shape[0], num_classes, "labels", function)
    _check_labels(negative_labels, negative_keys.shape[0], num_classes, "negative_labels", function)

    if detach_prototypes:
        classifier_weight = classifier_weight.detach()
    normalized_queries = intra_class_normalize(queries, classifier_weight, labels)  # (B, d)
    normalized_positives = intra_class_normalize(positive_keys.detach(), classifier_weight, labels)  # (B, d)
    positive_logits = (normalized_queries * normalized_positives).sum(dim=-1) / temperature  # (B,)

    # Multiplying by 0 keeps the graph, so backward() works even when no query has a stored negative.
    total = positive_logits.sum() * 0.0
    negative_keys = negative_keys.detach()
    # One matrix product per emotion present in the batch: (B_c, K_c) logits in all, not (B, M).
    for emotion in labels.unique().tolist():
        is_emotion_key = negative_labels == emotion
        if not bool(is_emotion_key.any()):
            continue  # L_i = 0 for these queries
        emotion_keys = negative_keys[is_emotion_key]
        normalized_negatives = intra_class_normalize(
            emotion_keys, classifier_weight, negative_labels[is_emotion_key]
        )  # (K_c, d)
        rows = labels == emotion
        negative_logits = normalized_queries[rows] @ normalized_negatives.T / temperature  # (B_c, K_c)
        logits = torch.cat([positive_logits[rows, None], negative_logits], dim=1)
        total = total + (torch.logsumexp(logits, dim=1) - positive_logits[rows]).sum()
    return total / queries.shape[0]


def emoco_loss(
    emotion_loss: torch.Tensor,
    contrastive_loss: torch.Tensor,
    emotion_loss_weight: float = 1.0,
) -> torch.Tensor:
    """Eq. 1, the EmoCo objective λ L_emo + L_cont.

    The weight λ multiplies the emotion-classification loss, not the contrastive loss ("weight coefficient is λ = 1
    for L_emo", Sec. IV-B4).

    Args:
        emotion_loss: scalar L_emo (Eq. 2).
        contrastive_loss: scalar L_cont (Eq. 5).
        emotion_loss_weight: λ, 1.0 in the paper.

    Returns:
        Scalar loss.
    """
    for name, value in (("emotion_loss", emotion_loss), ("contrastive_loss", contrastive_loss)):
        shape = tuple(torch.as_tensor(value).shape)
        if shape != ():
            raise ValueError(f"emoco_loss: {name} must be a scalar (0-dim) loss, got shape {shape}.")
    return emotion_loss_weight * emotion_loss + contrastive_loss


__all__ = [
    "emoco_loss",
    "emotion_aware_contrastive_loss",
    "emotion_classification_loss",
    "intra_class_normalize",
]

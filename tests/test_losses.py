"""Each loss of clef_hf.losses against a direct, loop-based computation of its equation, plus gradients and edge cases."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import random_features

from clef_hf.losses import (
    au_intensity_loss,
    au_loss,
    cosine_logits,
    expected_intensity,
    expression_loss,
    fine_tuning_loss,
    image_text_contrastive_loss,
    intensity_logits,
    intensity_targets,
    name_description_loss,
    pretraining_loss,
    supervised_contrastive_loss,
)

DTYPE = torch.float64


features = random_features


def unit(v: torch.Tensor) -> torch.Tensor:
    v = v.detach()
    return v / v.norm()


# ---------------------------------------------------------------- Eq. 1 references


def loop_supcon(features_a, features_b, labels, temperature, labels_b=None):
    """Eq. 1 written out: anchors are rows of a; the contrast set is all rows of a and b but the anchor."""
    labels_b = labels if labels_b is None else labels_b
    contrast = [unit(v) for v in features_a] + [unit(v) for v in features_b]
    contrast_labels = [int(y) for y in labels] + [int(y) for y in labels_b]
    total = 0.0
    for i, anchor in enumerate(features_a):
        anchor = unit(anchor)
        others = [k for k in range(len(contrast)) if k != i]
        denominator = sum(math.exp(float(anchor @ contrast[k]) / temperature) for k in others)
        positives = [k for k in others if contrast_labels[k] == int(labels[i])]
        if positives:
            total += -sum(
                math.log(math.exp(float(anchor @ contrast[p]) / temperature) / denominator) for p in positives
            ) / len(positives)
    return total / len(features_a)


def khosla_supcon_one_mode(features_a, features_b, labels, temperature):
    """Khosla et al.'s SupConLoss (contrast_mode='one', base_temperature=temperature), transcribed from the reference
    implementation with its newer guard for anchors without positives."""
    feats = torch.stack([F.normalize(features_a, dim=1), F.normalize(features_b, dim=1)], dim=1)  # (bsz, views, d)
    batch_size = feats.shape[0]
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels, labels.T).to(feats.dtype)
    contrast_count = feats.shape[1]
    contrast_feature = torch.cat(torch.unbind(feats, dim=1), dim=0)
    anchor_feature = feats[:, 0]
    anchor_count = 1
    anchor_dot_contrast = torch.div(anchor_feature @ contrast_feature.T, temperature)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = mask.repeat(anchor_count, contrast_count)
    logits_mask = torch.scatter(
        torch.ones_like(mask), 1, torch.arange(batch_size * anchor_count).view(-1, 1), 0
    )
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mask_pos_pairs = mask.sum(1)
    mask_pos_pairs = torch.where(mask_pos_pairs < 1e-6, 1, mask_pos_pairs)
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask_pos_pairs
    loss = -(temperature / temperature) * mean_log_prob_pos
    return loss.view(anchor_count, batch_size).mean()


# ---------------------------------------------------------------- Eq. 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_supcon_matches_loop_and_khosla(seed):
    a, b = features(10, seed=seed), features(10, seed=seed + 100)
    labels = torch.randint(0, 3, (10,), generator=torch.Generator().manual_seed(seed))
    ours = supervised_contrastive_loss(a, b, labels, temperature=0.25)
    assert float(ours) == pytest.approx(loop_supcon(a, b, labels, 0.25), abs=1e-5)
    assert float(ours) == pytest.approx(float(khosla_supcon_one_mode(a, b, labels, 0.25)), abs=1e-5)


def test_supcon_is_scale_invariant_and_uses_temperature():
    a, b = features(6, seed=3), features(6, seed=4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    base = supervised_contrastive_loss(a, b, labels, 0.25)
    assert torch.allclose(supervised_contrastive_loss(5 * a, 0.1 * b, labels, 0.25), base)
    assert not torch.allclose(supervised_contrastive_loss(a, b, labels, 0.5), base)


def test_supcon_single_class_batch():
    a, b = features(5, seed=5), features(5, seed=6)
    labels = torch.zeros(5, dtype=torch.long)
    ours = supervised_contrastive_loss(a, b, labels, 0.25)
    # Every other row is a positive: the loss is the mean of -log(1/(2n-1)) minus the spread of similarities.
    assert float(ours) == pytest.approx(loop_supcon(a, b, labels, 0.25), abs=1e-5)
    assert float(ours) == pytest.approx(float(khosla_supcon_one_mode(a, b, labels, 0.25)), abs=1e-5)


def test_supcon_anchor_without_positives_contributes_zero_and_counts():
    a, b = features(4, seed=7), features(4, seed=8)
    labels = torch.tensor([0, 1, 1, 2])
    labels_b = torch.tensor([5, 1, 1, 6])  # anchors 0 and 3 have no positive anywhere
    ours = supervised_contrastive_loss(a, b, labels, 0.25, labels_b=labels_b)
    assert float(ours) == pytest.approx(loop_supcon(a, b, labels, 0.25, labels_b=labels_b), abs=1e-6)
    # Only anchors 1 and 2 contribute, and the mean still divides by 4.
    two_anchor = supervised_contrastive_loss(a[1:3], torch.cat([b[1:3], a[[0, 3]], b[[0, 3]]]), labels[1:3],
                                             0.25, labels_b=torch.tensor([1, 1, -10, -11, -12, -13]))
    assert float(ours) == pytest.approx(float(two_anchor) * 2 / 4, abs=1e-6)


def test_supcon_with_distinct_second_set():
    a = features(6, seed=9)
    texts = features(3, seed=10)  # one text per activity
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    ours = supervised_contrastive_loss(a, texts, labels, 0.25, labels_b=torch.arange(3))
    assert float(ours) == pytest.approx(loop_supcon(a, texts, labels, 0.25, labels_b=torch.arange(3)), abs=1e-6)


def test_supcon_gradients_are_finite():
    a, b = features(6, seed=11, requires_grad=True), features(6, seed=12, requires_grad=True)
    supervised_contrastive_loss(a, b, torch.tensor([0, 0, 0, 1, 1, 2]), 0.25).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_supcon_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="labels"):
        supervised_contrastive_loss(features(4), features(4), torch.tensor([0, 1, 2]))


# ---------------------------------------------------------------- Eq. 2


def test_pretraining_loss_is_image_image_plus_image_activity():
    image, augmented, activity = features(8, seed=13), features(8, seed=14), features(8, seed=15)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    expected = loop_supcon(image, augmented, labels, 0.25) + loop_supcon(image, activity, labels, 0.25)
    assert float(pretraining_loss(image, augmented, activity, labels)) == pytest.approx(expected, abs=1e-5)


def test_pretraining_loss_gradients_are_finite():
    image, augmented, activity = (features(6, seed=s, requires_grad=True) for s in (40, 41, 42))
    pretraining_loss(image, augmented, activity, torch.tensor([0, 0, 1, 1, 1, 2])).backward()
    for tensor in (image, augmented, activity):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


# ---------------------------------------------------------------- Eq. 3


def test_name_description_loss_matches_loop():
    descriptions, names = features(5, seed=16), features(5, seed=17)
    tau = 0.07
    expected = 0.0
    for i in range(5):
        scores = [math.exp(float(unit(descriptions[i]) @ unit(names[j])) / tau) for j in range(5)]
        expected += -math.log(scores[i] / sum(scores))
    expected /= 5
    assert float(name_description_loss(descriptions, names, tau)) == pytest.approx(expected, abs=1e-6)


def test_name_description_loss_learnable_temperature_gets_gradient():
    descriptions, names = features(4, seed=18, requires_grad=True), features(4, seed=19, requires_grad=True)
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=DTYPE, requires_grad=True)
    name_description_loss(descriptions, names, 1 / log_scale.exp()).backward()
    for tensor in (descriptions, names, log_scale):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_name_description_loss_rejects_unaligned():
    with pytest.raises(ValueError, match="one description per name"):
        name_description_loss(features(4), features(5), 0.07)


# ---------------------------------------------------------------- Eq. 4


def loop_expression(image, names, labels, tau, weights):
    total = 0.0
    for i in range(len(image)):
        scores = [math.exp(float(unit(image[i]) @ unit(names[c])) / tau) for c in range(len(names))]
        for c in range(len(names)):
            y = 1.0 if c == int(labels[i]) else 0.0
            if y:
                total += -weights[c] * math.log(scores[c] * y / sum(scores))
    return total / len(image)


def test_expression_loss_matches_loop_with_weights():
    image, names = features(7, seed=20), features(4, seed=21)
    labels = torch.tensor([0, 1, 2, 3, 3, 1, 0])
    weights = torch.tensor([0.5, 1.0, 2.0, 0.5], dtype=DTYPE)
    ours = expression_loss(image, names, labels, 0.1, weights)
    assert float(ours) == pytest.approx(loop_expression(image, names, labels, 0.1, weights.tolist()), abs=1e-6)
    # Divided by B, not by the sum of the target weights as F.cross_entropy(weight=) would.
    logits = cosine_logits(image, names, 0.1)
    assert not torch.allclose(ours, F.cross_entropy(logits, labels, weight=weights))
    assert torch.allclose(ours, F.cross_entropy(logits, labels, weight=weights, reduction="sum") / 7)


def test_expression_loss_without_weights_is_cross_entropy():
    image, names = features(6, seed=22), features(3, seed=23)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    assert torch.allclose(
        expression_loss(image, names, labels, 0.2), F.cross_entropy(cosine_logits(image, names, 0.2), labels)
    )


def test_expression_loss_single_class_batch_and_gradients():
    image, names = features(5, seed=24, requires_grad=True), features(3, seed=25, requires_grad=True)
    labels = torch.full((5,), 2)
    loss = expression_loss(image, names, labels, 0.07)
    assert loss.item() == pytest.approx(loop_expression(image, names, labels, 0.07, [1.0] * 3), abs=1e-6)
    loss.backward()
    assert torch.isfinite(image.grad).all() and torch.isfinite(names.grad).all()


def test_expression_loss_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        expression_loss(features(2), features(3), torch.tensor([0, 3]), 0.07)


# ---------------------------------------------------------------- Eq. 5


def loop_au(image, names, labels, tau, weights):
    total = 0.0
    for i in range(len(image)):
        for c in range(len(names)):
            y = int(labels[i, c])
            if y < 0:
                continue
            p = 1 / (1 + math.exp(-float(unit(image[i]) @ unit(names[c])) / tau))
            total += -(weights[c] * y * math.log(p) + (1 - y) * math.log(1 - p))
    return total / len(image)


def test_au_loss_matches_loop_with_unknowns_and_weights():
    image, names = features(6, seed=26), features(5, seed=27)
    labels = torch.tensor(
        [[1, 0, -1, 1, 0], [0, 0, 0, 0, 1], [-1, -1, 1, 1, 1], [1, 1, 1, 0, 0], [0, -1, 0, -1, 0], [1, 0, 1, 0, 1]]
    )
    weights = torch.tensor([2.0, 0.5, 1.0, 1.5, 1.0], dtype=DTYPE)
    ours = au_loss(image, names, labels, 0.1, weights)
    assert float(ours) == pytest.approx(loop_au(image, names, labels, 0.1, weights.tolist()), abs=1e-6)


def test_au_loss_weight_applies_to_positive_term_only():
    image, names = features(3, seed=28), features(2, seed=29)
    negatives = torch.zeros(3, 2, dtype=torch.long)
    weights = torch.tensor([10.0, 10.0], dtype=DTYPE)
    assert torch.allclose(au_loss(image, names, negatives, 0.1, weights), au_loss(image, names, negatives, 0.1))


def test_au_loss_all_unknown_is_zero_with_finite_zero_gradients():
    image, names = features(4, seed=30, requires_grad=True), features(3, seed=31, requires_grad=True)
    loss = au_loss(image, names, torch.full((4, 3), -1), 0.07)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(image.grad).all() and float(image.grad.abs().sum()) == 0.0


def test_au_loss_single_class_batches_and_gradients():
    image, names = features(4, seed=32, requires_grad=True), features(3, seed=33)
    for value in (0, 1):
        labels = torch.full((4, 3), value)
        loss = au_loss(image, names, labels, 0.07)
        assert loss.item() == pytest.approx(loop_au(image, names, labels, 0.07, [1.0] * 3), abs=1e-6)
        loss.backward()
        assert torch.isfinite(image.grad).all()


def test_au_loss_rejects_bad_labels():
    with pytest.raises(ValueError, match="1, 0 or -1"):
        au_loss(features(2), features(3), torch.tensor([[1, 0, 9], [0, 0, 0]]), 0.07)
    with pytest.raises(ValueError, match="shape"):
        au_loss(features(2), features(3), torch.zeros(2, 4), 0.07)


# ---------------------------------------------------------------- Eq. 6


def test_fine_tuning_loss_combines_with_lambda():
    image_name, name_description = torch.tensor(1.5), torch.tensor(0.75)
    assert float(fine_tuning_loss(image_name, name_description)) == pytest.approx((2.0 * 1.5 + 0.75) / 2)
    assert float(fine_tuning_loss(image_name, name_description, 1.0)) == pytest.approx((1.5 + 0.75) / 2)
    image_name = torch.tensor(1.5, requires_grad=True)
    name_description = torch.tensor(0.75, requires_grad=True)
    fine_tuning_loss(image_name, name_description).backward()
    assert image_name.grad.item() == 1.0 and name_description.grad.item() == 0.5


# ---------------------------------------------------------------- stage 0 (CLIP / FaRL image-text loss)


def loop_image_text(images, texts, tau):
    """CLIP's symmetric InfoNCE written out: image i should pick caption i among all captions, and caption j image j
    among all images; the two mean negative log-probabilities are averaged."""
    n = len(images)
    s = [[float(unit(images[i]) @ unit(texts[j])) / tau for j in range(n)] for i in range(n)]
    image_to_text = -sum(math.log(math.exp(s[i][i]) / sum(math.exp(s[i][j]) for j in range(n))) for i in range(n))
    text_to_image = -sum(math.log(math.exp(s[j][j]) / sum(math.exp(s[i][j]) for i in range(n))) for j in range(n))
    return (image_to_text / n + text_to_image / n) / 2


@pytest.mark.parametrize("seed, tau", [(0, 0.07), (1, 0.25), (2, 1.0)])
def test_image_text_loss_matches_loop(seed, tau):
    images, texts = features(9, seed=seed + 50), features(9, seed=seed + 60)
    ours = image_text_contrastive_loss(images, texts, tau)
    assert float(ours) == pytest.approx(loop_image_text(images, texts, tau), abs=1e-6)


def test_image_text_loss_is_symmetric_and_scale_invariant():
    images, texts = features(6, seed=70), features(6, seed=71)
    base = image_text_contrastive_loss(images, texts, 0.1)
    assert torch.allclose(image_text_contrastive_loss(texts, images, 0.1), base)  # both directions count equally
    assert torch.allclose(image_text_contrastive_loss(3 * images, 0.2 * texts, 0.1), base)
    one_way = F.cross_entropy(cosine_logits(images, texts, 0.1), torch.arange(6))
    assert not torch.allclose(one_way, base)  # not the image->text term alone


def test_image_text_loss_learnable_temperature_gets_gradient():
    images, texts = features(5, seed=72, requires_grad=True), features(5, seed=73, requires_grad=True)
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=DTYPE, requires_grad=True)
    image_text_contrastive_loss(images, texts, 1 / log_scale.exp()).backward()
    for tensor in (images, texts, log_scale):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_image_text_loss_rejects_unpaired_features():
    with pytest.raises(ValueError, match="one caption per image"):
        image_text_contrastive_loss(features(4), features(5), 0.07)


# ---------------------------------------------------------------- Eq. I (AU intensity)

LEVELS = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], dtype=DTYPE)


def loop_intensity_loss(image_features, level_features, intensities, levels, temperature):
    """Eq. I written out: per image and known AU, a softmax over the AU's L phrases; the target puts the intensity
    on its level, or splits it between the two levels around it so that the target's expected level is y."""
    batch, num_aus, num_levels = image_features.shape[0], level_features.shape[0], level_features.shape[1]
    total = 0.0
    for i in range(batch):
        for c in range(num_aus):
            y = float(intensities[i, c])
            if y < 0:
                continue
            y = min(max(y, float(levels[0])), float(levels[-1]))
            logits = [float(unit(image_features[i]) @ unit(level_features[c, l])) / temperature
                      for l in range(num_levels)]
            log_norm = math.log(sum(math.exp(s) for s in logits))
            targets = [0.0] * num_levels
            for l in range(num_levels - 1):
                low, high = float(levels[l]), float(levels[l + 1])
                if low <= y <= high:
                    targets[l], targets[l + 1] = (high - y) / (high - low), (y - low) / (high - low)
                    break
            total -= sum(q * (s - log_norm) for q, s in zip(targets, logits))
    return total / batch


def test_au_intensity_loss_matches_loop_with_fractional_and_unknown_intensities():
    image = features(5, seed=1)
    phrases = features(3 * 6, seed=2).reshape(3, 6, -1)
    intensities = torch.tensor([[0.0, 2.37, -1.0], [5.0, 1.0, 4.5], [-1.0, -1.0, -1.0], [3.0, 0.2, 2.0],
                                [7.0, 4.0, 0.0]], dtype=DTYPE)  # 7 lies above the top level: clamped to 5
    for tau in (0.07, 1.0):
        expected = loop_intensity_loss(image, phrases, intensities, LEVELS, tau)
        assert au_intensity_loss(image, phrases, intensities, LEVELS, tau).item() == pytest.approx(expected, rel=1e-9)


def test_intensity_targets_have_the_labelled_intensity_as_expected_level():
    y = torch.tensor([0.0, 0.4, 2.0, 2.37, 4.99, 5.0], dtype=DTYPE)
    targets = intensity_targets(y, LEVELS)
    assert torch.allclose(targets.sum(-1), torch.ones(6, dtype=DTYPE))
    assert torch.allclose(targets @ LEVELS, y)
    assert targets[2].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # an intensity on a level is one-hot
    assert (targets > 0).sum(-1).max() <= 2  # at most the two levels around it


def test_expected_intensity_is_the_softmax_mean_level_within_the_range():
    image = features(4, seed=3)
    phrases = features(2 * 6, seed=4).reshape(2, 6, -1)
    logits = intensity_logits(image, phrases, 0.1)
    assert logits.shape == (4, 2, 6)
    assert logits[1, 0, 3].item() == pytest.approx(float(unit(image[1]) @ unit(phrases[0, 3])) / 0.1)
    predicted = expected_intensity(logits, LEVELS)
    manual = sum(logits.softmax(-1)[..., l] * float(LEVELS[l]) for l in range(6))
    assert torch.allclose(predicted, manual) and ((predicted >= 0) & (predicted <= 5)).all()


def test_au_intensity_loss_unknowns_contribute_nothing_and_gradients_flow():
    image = features(3, seed=5, requires_grad=True)
    phrases = features(2 * 6, seed=6, requires_grad=True)
    temperature = torch.tensor(0.5, dtype=DTYPE, requires_grad=True)
    all_unknown = -torch.ones(3, 2, dtype=DTYPE)
    assert au_intensity_loss(image, phrases.reshape(2, 6, -1), all_unknown, LEVELS, temperature).item() == 0.0
    labels = torch.tensor([[1.0, -1.0], [3.5, 0.0], [-1.0, 5.0]], dtype=DTYPE)
    loss = au_intensity_loss(image, phrases.reshape(2, 6, -1), labels, LEVELS, temperature)
    loss.backward()
    for tensor in (image, phrases, temperature):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
    # Changing an unknown entry's stored value changes nothing.
    other = labels.clone()
    other[0, 1] = -7.0
    assert au_intensity_loss(image, phrases.reshape(2, 6, -1), other, LEVELS, temperature).item() == loss.item()


def test_au_intensity_loss_rejects_misaligned_inputs_and_nan():
    image, phrases = features(2), features(12).reshape(2, 6, -1)
    with pytest.raises(ValueError, match=r"intensities \(B, C\)"):
        au_intensity_loss(image, phrases, torch.zeros(2, 3, dtype=DTYPE), LEVELS, 0.1)
    with pytest.raises(ValueError, match=r"levels \(L,\)"):
        au_intensity_loss(image, phrases, torch.zeros(2, 2, dtype=DTYPE), LEVELS[:5], 0.1)
    with pytest.raises(ValueError, match="NaN"):
        au_intensity_loss(image, phrases, torch.full((2, 2), float("nan"), dtype=DTYPE), LEVELS, 0.1)

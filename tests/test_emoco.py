"""EmoCo (clef_hf.emoco): each equation against a direct, loop-based computation, plus the multi-queue dictionary
against a Python list model and the momentum update against its formula."""

import copy
import inspect
import io
import math
from collections import deque

import pytest
import torch
import torch.nn.functional as F
from conftest import random_features, tiny_vision_config
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from clef_hf.emoco import (
    MultiQueueDictionary,
    emoco_loss,
    emotion_aware_contrastive_loss,
    emotion_classification_loss,
    intra_class_normalize,
    momentum_update,
)

DTYPE = torch.float64


features = random_features


def integer_labels(n: int, num_classes: int, seed: int) -> torch.Tensor:
    return torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- loop references, written from the paper's text


def as_list(v: torch.Tensor) -> list[float]:
    return [float(x) for x in v.detach()]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def unit(a: list[float]) -> list[float]:
    norm = math.sqrt(dot(a, a))
    return [x / norm for x in a]


def loop_normalize(feature: torch.Tensor, classifier_weight: torch.Tensor, label: int) -> list[float]:
    """Eq. 4 for one vector: N(q) = (q - w̃) / ||q - w̃||, w̃ the unit row of W for the label, q a unit vector."""
    q = unit(as_list(feature))
    prototype = unit(as_list(classifier_weight[label]))
    return unit([a - b for a, b in zip(q, prototype)])


def loop_emotion_loss(queries, classifier_weight, labels) -> float:
    """Eq. 2 per image, averaged: -log(exp(w_y q) / Σ_j exp(w_j q))."""
    total = 0.0
    for i in range(len(queries)):
        q = unit(as_list(queries[i]))
        scores = [math.exp(dot(as_list(classifier_weight[j]), q)) for j in range(len(classifier_weight))]
        total += -math.log(scores[int(labels[i])] / sum(scores))
    return total / len(queries)


def loop_contrastive_loss(queries, positive_keys, labels, negative_keys, negative_labels, classifier_weight, tau):
    """Eq. 5 per query, averaged; the negatives are the stored keys of the query's own emotion."""
    total = 0.0
    for i in range(len(queries)):
        y = int(labels[i])
        q = loop_normalize(queries[i], classifier_weight, y)
        positive = math.exp(dot(q, loop_normalize(positive_keys[i], classifier_weight, y)) / tau)
        negatives = 0.0
        for j in range(len(negative_keys)):
            if int(negative_labels[j]) == y:
                negatives += math.exp(dot(q, loop_normalize(negative_keys[j], classifier_weight, y)) / tau)
        total += -math.log(positive / (positive + negatives))
    return total / len(queries)


def contrastive_inputs(seed: int, batch: int = 10, stored: int = 25, num_classes: int = 4, d: int = 8):
    """Queries of all 4 emotions; stored keys of emotions 0-2 only, so emotion 3 has an empty queue."""
    queries = features(batch, d, seed)
    positive_keys = features(batch, d, seed + 1000)
    labels = integer_labels(batch, num_classes, seed)
    labels[:4] = torch.arange(4)  # every emotion present
    negative_keys = features(stored, d, seed + 2000)
    negative_labels = integer_labels(stored, num_classes - 1, seed + 3000)
    classifier_weight = features(num_classes, d, seed + 4000)
    return queries, positive_keys, labels, negative_keys, negative_labels, classifier_weight


# ---------------------------------------------------------------- the paper's hyperparameters as defaults


def test_defaults_are_the_papers_hyperparameters():
    # Sec. IV-B4: K = 65536, τ = 0.2, λ = 1 for L_emo, m = 0.999; Sec. III-B: 128-d embeddings; AffectNet: 7 emotions.
    assert inspect.signature(emotion_aware_contrastive_loss).parameters["temperature"].default == 0.2
    assert inspect.signature(emoco_loss).parameters["emotion_loss_weight"].default == 1.0
    assert inspect.signature(momentum_update).parameters["m"].default == 0.999
    queue_defaults = inspect.signature(MultiQueueDictionary.__init__).parameters
    assert queue_defaults["queue_size"].default == 65536
    assert queue_defaults["feature_dim"].default == 128
    assert queue_defaults["num_classes"].default == 7


# ---------------------------------------------------------------- Eq. 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_emotion_classification_loss_matches_loop(seed):
    queries, classifier_weight = features(9, seed=seed), features(5, seed=seed + 100)
    labels = integer_labels(9, 5, seed)
    ours = emotion_classification_loss(queries, classifier_weight, labels)
    assert float(ours) == pytest.approx(loop_emotion_loss(queries, classifier_weight, labels), abs=1e-10)
    assert torch.allclose(ours, F.cross_entropy(F.normalize(queries, dim=-1) @ classifier_weight.T, labels))


def test_emotion_classification_loss_normalises_queries_not_classifier():
    queries, classifier_weight = features(6, seed=3), features(4, seed=4)
    labels = torch.tensor([0, 1, 2, 3, 3, 0])
    base = emotion_classification_loss(queries, classifier_weight, labels)
    assert torch.allclose(emotion_classification_loss(7.0 * queries, classifier_weight, labels), base)
    # The classifier's norm matters in Eq. 2 (w_j · q, not w̃_j · q).
    assert not torch.allclose(emotion_classification_loss(queries, 3.0 * classifier_weight, labels), base)


def test_emotion_classification_loss_sign_and_target():
    classifier_weight = torch.eye(3, dtype=DTYPE) * 5
    queries = torch.eye(3, dtype=DTYPE)  # query i points at prototype i
    right = emotion_classification_loss(queries, classifier_weight, torch.tensor([0, 1, 2]))
    wrong = emotion_classification_loss(queries, classifier_weight, torch.tensor([1, 2, 0]))
    assert 0 < float(right) < float(wrong)


def test_emotion_classification_loss_gradients_are_finite():
    queries, classifier_weight = features(6, seed=5, requires_grad=True), features(4, seed=6, requires_grad=True)
    emotion_classification_loss(queries, classifier_weight, torch.tensor([0, 0, 1, 2, 3, 3])).backward()
    for tensor in (queries, classifier_weight):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_emotion_classification_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="classifier_weight"):
        emotion_classification_loss(features(4, 8), features(3, 6), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="labels"):
        emotion_classification_loss(features(4), features(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        emotion_classification_loss(features(2), features(3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="queries"):
        emotion_classification_loss(features(4)[0], features(3), torch.tensor([0]))


# ---------------------------------------------------------------- Eq. 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intra_class_normalize_matches_formula_per_class(seed):
    feats, classifier_weight = features(12, seed=seed), features(4, seed=seed + 100)
    labels = integer_labels(12, 4, seed)
    ours = intra_class_normalize(feats, classifier_weight, labels)
    for emotion in range(4):
        for i in torch.nonzero(labels == emotion).flatten().tolist():
            expected = torch.tensor(loop_normalize(feats[i], classifier_weight, emotion), dtype=DTYPE)
            torch.testing.assert_close(ours[i], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(12, dtype=DTYPE))


def test_intra_class_normalize_single_sample_class():
    feats, classifier_weight = features(4, seed=7), features(2, seed=8)
    labels = torch.tensor([0, 0, 0, 1])  # emotion 1 has one sample
    ours = intra_class_normalize(feats, classifier_weight, labels)
    expected = torch.tensor(loop_normalize(feats[3], classifier_weight, 1), dtype=DTYPE)
    torch.testing.assert_close(ours[3], expected, rtol=0, atol=1e-12)
    # Centred on the classifier's prototype, not on the batch's class mean (which would leave a lone sample at 0).
    assert float(ours[3].norm()) == pytest.approx(1.0)
    torch.testing.assert_close(intra_class_normalize(feats[3:], classifier_weight, labels[3:])[0], ours[3])


def test_intra_class_normalize_is_scale_invariant_and_uses_the_label():
    feats, classifier_weight = features(5, seed=9), features(3, seed=10)
    labels = torch.tensor([0, 1, 2, 1, 0])
    base = intra_class_normalize(feats, classifier_weight, labels)
    torch.testing.assert_close(intra_class_normalize(4.0 * feats, 0.5 * classifier_weight, labels), base)
    assert not torch.allclose(intra_class_normalize(feats, classifier_weight, (labels + 1) % 3), base)


def test_intra_class_normalize_feature_at_its_prototype_is_finite():
    classifier_weight = features(3, seed=11, requires_grad=True)
    feats = (2.0 * classifier_weight[1:2].detach()).requires_grad_(True)
    out = intra_class_normalize(feats, classifier_weight, torch.tensor([1]))
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(feats.grad).all() and torch.isfinite(classifier_weight.grad).all()


def test_intra_class_normalize_rejects_bad_shapes():
    with pytest.raises(ValueError, match="features"):
        intra_class_normalize(features(1)[0], features(3), torch.tensor([0]))
    with pytest.raises(ValueError, match="classifier_weight"):
        intra_class_normalize(features(4, 8), features(3, 5), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="labels"):
        intra_class_normalize(features(4), features(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        intra_class_normalize(features(2), features(3), torch.tensor([0.0, 1.0]))


# ---------------------------------------------------------------- Eq. 5


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_contrastive_loss_matches_loop(seed):
    inputs = contrastive_inputs(seed)
    ours = emotion_aware_contrastive_loss(*inputs)
    assert float(ours) == pytest.approx(loop_contrastive_loss(*inputs, tau=0.2), abs=1e-10)
    assert float(emotion_aware_contrastive_loss(*inputs, temperature=0.07)) == pytest.approx(
        loop_contrastive_loss(*inputs, tau=0.07), abs=1e-10
    )


def test_contrastive_loss_default_temperature_is_0_2():
    inputs = contrastive_inputs(4)
    default = emotion_aware_contrastive_loss(*inputs)
    assert torch.equal(default, emotion_aware_contrastive_loss(*inputs, temperature=0.2))
    assert not torch.allclose(default, emotion_aware_contrastive_loss(*inputs, temperature=0.07))


def test_contrastive_negatives_are_the_queries_own_emotion_only():
    queries, positive_keys, labels, negative_keys, negative_labels, classifier_weight = contrastive_inputs(5)
    labels = torch.zeros_like(labels)  # every query is emotion 0
    base = emotion_aware_contrastive_loss(queries, positive_keys, labels, negative_keys, negative_labels,
                                          classifier_weight)
    others = negative_labels != 0
    changed = negative_keys.clone()
    changed[others] = features(int(others.sum()), seed=6)
    same = emotion_aware_contrastive_loss(queries, positive_keys, labels, changed, negative_labels,
                                          classifier_weight)
    torch.testing.assert_close(same, base, rtol=0, atol=1e-12)
    changed = negative_keys.clone()
    changed[~others] = features(int((~others).sum()), seed=7)
    assert not torch.allclose(
        emotion_aware_contrastive_loss(queries, positive_keys, labels, changed, negative_labels, classifier_weight),
        base,
    )


def test_contrastive_loss_sign():
    queries, _, labels, negative_keys, negative_labels, classifier_weight = contrastive_inputs(8)
    aligned = emotion_aware_contrastive_loss(queries, queries, labels, negative_keys, negative_labels,
                                             classifier_weight)
    opposite = emotion_aware_contrastive_loss(queries, -queries, labels, negative_keys, negative_labels,
                                              classifier_weight)
    # -log of a probability: non-negative, and smaller when the positive key agrees with its query.
    assert 0 < float(aligned) < float(opposite)


def test_contrastive_loss_empty_queue_is_zero_and_counts_in_the_mean():
    queries, positive_keys, labels, negative_keys, negative_labels, classifier_weight = contrastive_inputs(9)
    queries = queries.detach().requires_grad_(True)
    empty = emotion_aware_contrastive_loss(queries, positive_keys, labels, negative_keys[:0], negative_labels[:0],
                                           classifier_weight)
    assert empty.item() == 0.0
    empty.backward()
    assert torch.equal(queries.grad, torch.zeros_like(queries))
    # Emotion 3 has no stored key: those queries add 0 but still divide the sum by the whole batch.
    full = emotion_aware_contrastive_loss(queries, positive_keys, labels, negative_keys, negative_labels,
                                          classifier_weight)
    keep = labels != 3
    part = emotion_aware_contrastive_loss(queries[keep], positive_keys[keep], labels[keep], negative_keys,
                                          negative_labels, classifier_weight)
    assert full.item() == pytest.approx(part.item() * int(keep.sum()) / len(labels), abs=1e-12)


def test_contrastive_gradients_reach_queries_only():
    queries, positive_keys, labels, negative_keys, negative_labels, classifier_weight = (
        t.detach().requires_grad_(t.is_floating_point()) for t in contrastive_inputs(10)
    )
    emotion_aware_contrastive_loss(queries, positive_keys, labels, negative_keys, negative_labels,
                                   classifier_weight).backward()
    assert torch.isfinite(queries.grad).all() and queries.grad.abs().sum() > 0
    assert positive_keys.grad is None and negative_keys.grad is None and classifier_weight.grad is None


def test_contrastive_prototype_gradient_when_not_detached():
    queries, positive_keys, labels, negative_keys, negative_labels, classifier_weight = contrastive_inputs(11)
    classifier_weight.requires_grad_(True)
    emotion_aware_contrastive_loss(queries, positive_keys, labels, negative_keys, negative_labels, classifier_weight,
                                   detach_prototypes=False).backward()
    assert torch.isfinite(classifier_weight.grad).all() and classifier_weight.grad.abs().sum() > 0


def test_contrastive_loss_rejects_bad_shapes():
    queries, positive_keys, labels, negative_keys, negative_labels, classifier_weight = contrastive_inputs(12)
    with pytest.raises(ValueError, match="positive_keys"):
        emotion_aware_contrastive_loss(queries, positive_keys[:-1], labels, negative_keys, negative_labels,
                                       classifier_weight)
    with pytest.raises(ValueError, match="negative_keys"):
        emotion_aware_contrastive_loss(queries, positive_keys, labels, negative_keys[:, :5], negative_labels,
                                       classifier_weight)
    with pytest.raises(ValueError, match="negative_labels"):
        emotion_aware_contrastive_loss(queries, positive_keys, labels, negative_keys, negative_labels[:-1],
                                       classifier_weight)
    with pytest.raises(ValueError, match="labels"):
        emotion_aware_contrastive_loss(queries, positive_keys, labels[:-1], negative_keys, negative_labels,
                                       classifier_weight)
    with pytest.raises(ValueError, match="classifier_weight"):
        emotion_aware_contrastive_loss(queries, positive_keys, labels, negative_keys, negative_labels,
                                       classifier_weight[:, :5])
    with pytest.raises(ValueError, match=r"negative_labels must lie in \[0, 4\)"):
        emotion_aware_contrastive_loss(queries, positive_keys, labels, negative_keys, negative_labels + 4,
                                       classifier_weight)


# ---------------------------------------------------------------- Eq. 1


def test_emoco_loss_weights_the_emotion_loss():
    emotion, contrastive = torch.tensor(1.5, requires_grad=True), torch.tensor(0.25, requires_grad=True)
    assert emoco_loss(emotion, contrastive).item() == pytest.approx(1.75)
    total = emoco_loss(emotion, contrastive, emotion_loss_weight=2.0)
    assert total.item() == pytest.approx(2.0 * 1.5 + 0.25)  # λ multiplies L_emo, not L_cont (that would give 2.0)
    total.backward()
    assert emotion.grad.item() == 2.0 and contrastive.grad.item() == 1.0


def test_emoco_loss_is_the_weighted_sum_of_the_two_branches():
    queries, positive_keys, labels, negative_keys, negative_labels, classifier_weight = contrastive_inputs(13)
    queries.requires_grad_(True)
    classifier_weight.requires_grad_(True)
    emotion = emotion_classification_loss(queries, classifier_weight, labels)
    contrastive = emotion_aware_contrastive_loss(queries, positive_keys, labels, negative_keys, negative_labels,
                                                 classifier_weight)
    total = emoco_loss(emotion, contrastive, 0.5)
    expected = 0.5 * loop_emotion_loss(queries, classifier_weight, labels) + loop_contrastive_loss(
        queries, positive_keys, labels, negative_keys, negative_labels, classifier_weight, tau=0.2
    )
    assert total.item() == pytest.approx(expected, abs=1e-10)
    (weight_grad,) = torch.autograd.grad(total, classifier_weight, retain_graph=True)
    (emotion_only,) = torch.autograd.grad(0.5 * emotion, classifier_weight)
    torch.testing.assert_close(weight_grad, emotion_only)  # prototypes are detached in L_cont by default


def test_emoco_loss_rejects_non_scalars():
    with pytest.raises(ValueError, match="contrastive_loss"):
        emoco_loss(torch.tensor(1.0), torch.ones(3))
    with pytest.raises(ValueError, match="emotion_loss"):
        emoco_loss(torch.ones(2), torch.tensor(1.0))


# ---------------------------------------------------------------- the multi-queue dictionary


def test_queue_fifo_and_wrap_around_match_a_list_model():
    num_classes, size, dim = 3, 4, 5
    dictionary = MultiQueueDictionary(num_classes, size, dim)
    model = {emotion: deque(maxlen=size) for emotion in range(num_classes)}
    enqueued = [0] * num_classes
    generator = torch.Generator().manual_seed(0)
    for step, batch in enumerate([3, 5, 1, 0, 12, 2, 7, 4]):
        keys = torch.randn(batch, dim, generator=generator)
        labels = torch.randint(0, num_classes, (batch,), generator=generator)
        if step == 4:
            labels[:9] = 1  # more keys of one emotion than the queue holds
        dictionary.enqueue(keys, labels)
        stored = F.normalize(keys, dim=-1)
        for row, label in enumerate(labels.tolist()):
            model[label].append(stored[row])
            enqueued[label] += 1

        for emotion in range(num_classes):
            expected = torch.stack(list(model[emotion])) if model[emotion] else torch.zeros(0, dim)
            assert torch.equal(dictionary.queue_keys(emotion), expected)
            assert int(dictionary.filled_slots[emotion]) == len(model[emotion])
            assert int(dictionary.pointers[emotion]) == enqueued[emotion] % size
        all_keys, all_labels = dictionary.keys_and_labels()
        assert torch.equal(all_keys, torch.cat([dictionary.queue_keys(e) for e in range(num_classes)]))
        assert all_labels.tolist() == [e for e in range(num_classes) for _ in model[e]]


def test_queue_wrap_around_overwrites_the_oldest_slot():
    dictionary = MultiQueueDictionary(num_classes=2, queue_size=3, feature_dim=2)
    a, b, c, d = (torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[-1.0, 0.0]]),
                  torch.tensor([[0.0, -1.0]]))
    dictionary.enqueue(torch.cat([a, b]), torch.tensor([0, 0]))
    assert torch.equal(dictionary.keys[0], torch.cat([a, b, torch.zeros(1, 2)]))
    assert dictionary.pointers.tolist() == [2, 0] and dictionary.filled_slots.tolist() == [2, 0]
    dictionary.enqueue(torch.cat([c, d]), torch.tensor([0, 0]))
    assert torch.equal(dictionary.keys[0], torch.cat([d, b, c]))  # a, the oldest, was popped
    assert dictionary.pointers.tolist() == [1, 0] and dictionary.filled_slots.tolist() == [3, 0]
    assert torch.equal(dictionary.queue_keys(0), torch.cat([b, c, d]))
    assert dictionary.queue_keys(1).shape == (0, 2)


def test_fresh_queue_contributes_no_keys():
    dictionary = MultiQueueDictionary(num_classes=4, queue_size=8, feature_dim=8)
    keys, labels = dictionary.keys_and_labels()
    assert keys.shape == (0, 8) and labels.shape == (0,)
    inputs = contrastive_inputs(14)
    loss = emotion_aware_contrastive_loss(inputs[0], inputs[1], inputs[2], keys.to(DTYPE), labels, inputs[5])
    assert loss.item() == 0.0


def test_queue_stores_detached_unit_keys_and_returns_copies():
    dictionary = MultiQueueDictionary(num_classes=2, queue_size=4, feature_dim=3)
    keys = (torch.randn(3, 3, generator=torch.Generator().manual_seed(1)) * 10).requires_grad_(True)
    dictionary.enqueue(keys * 2, torch.tensor([1, 1, 1]))
    stored = dictionary.queue_keys(1)
    assert not stored.requires_grad and not dictionary.keys.requires_grad
    torch.testing.assert_close(stored, F.normalize(keys.detach(), dim=-1))
    dictionary.enqueue(torch.ones(2, 3), torch.tensor([1, 1]))  # fills slot 3, then wraps onto slot 0
    torch.testing.assert_close(stored, F.normalize(keys.detach(), dim=-1))  # unchanged by the later enqueue


def test_queue_survives_state_dict_round_trip():
    dictionary = MultiQueueDictionary(num_classes=3, queue_size=4, feature_dim=5)
    generator = torch.Generator().manual_seed(2)
    for batch in (6, 7):
        dictionary.enqueue(torch.randn(batch, 5, generator=generator), torch.randint(0, 3, (batch,),
                                                                                     generator=generator))
    assert set(dictionary.state_dict()) == {"keys", "pointers", "filled_slots"}
    buffer = io.BytesIO()
    torch.save(dictionary.state_dict(), buffer)
    buffer.seek(0)
    restored = MultiQueueDictionary(num_classes=3, queue_size=4, feature_dim=5)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for name in ("keys", "pointers", "filled_slots"):
        assert torch.equal(getattr(restored, name), getattr(dictionary, name))
    more_keys, more_labels = torch.randn(5, 5, generator=generator), torch.tensor([0, 1, 2, 2, 0])
    dictionary.enqueue(more_keys, more_labels)
    restored.enqueue(more_keys, more_labels)
    for original, copy_ in zip(dictionary.keys_and_labels(), restored.keys_and_labels()):
        assert torch.equal(original, copy_)


def test_queue_buffers_move_with_to():
    dictionary = MultiQueueDictionary(num_classes=2, queue_size=3, feature_dim=4).to(torch.float64)
    assert dictionary.keys.dtype == torch.float64 and dictionary.pointers.dtype == torch.long
    dictionary.enqueue(torch.randn(2, 4), torch.tensor([0, 1]))
    assert dictionary.keys_and_labels()[0].dtype == torch.float64
    assert {name for name, _ in dictionary.named_buffers()} == {"keys", "pointers", "filled_slots"}


def test_queue_rejects_bad_inputs():
    dictionary = MultiQueueDictionary(num_classes=3, queue_size=4, feature_dim=5)
    with pytest.raises(ValueError, match="keys"):
        dictionary.enqueue(torch.randn(2, 6), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        dictionary.enqueue(torch.randn(2, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        dictionary.enqueue(torch.randn(2, 5), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        dictionary.enqueue(torch.randn(2, 5), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="queue_size"):
        MultiQueueDictionary(num_classes=3, queue_size=0)


# ---------------------------------------------------------------- Eq. 3


def small_head(seed: int, dtype=DTYPE) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_momentum_update_matches_formula_exactly(dtype):
    online, momentum = small_head(0, dtype), small_head(1, dtype)
    online_before = {n: p.detach().clone() for n, p in online.named_parameters()}
    momentum_before = {n: p.detach().clone() for n, p in momentum.named_parameters()}
    momentum_update(online, momentum, m=0.9)
    for name, parameter in momentum.named_parameters():
        assert torch.equal(parameter, 0.9 * momentum_before[name] + (1 - 0.9) * online_before[name])
        assert parameter.grad_fn is None and parameter.is_leaf
    for name, parameter in online.named_parameters():
        assert torch.equal(parameter, online_before[name])


def test_momentum_update_default_is_0_999_and_zero_copies():
    online, momentum = small_head(2), small_head(3)
    before = {n: p.detach().clone() for n, p in momentum.named_parameters()}
    momentum_update(online, momentum)
    for name, parameter in momentum.named_parameters():
        expected = 0.999 * before[name] + (1 - 0.999) * dict(online.named_parameters())[name].detach()
        assert torch.equal(parameter, expected)
        assert not torch.allclose(parameter, 0.99 * before[name] + 0.01 * dict(online.named_parameters())[name])
    momentum_update(online, momentum, m=0.0)
    for (_, a), (_, b) in zip(online.named_parameters(), momentum.named_parameters()):
        assert torch.equal(a, b)


def test_momentum_update_on_clip_vision_towers():
    online = CLIPVisionModel(CLIPVisionConfig(**tiny_vision_config()))
    momentum = copy.deepcopy(online).requires_grad_(False)
    with torch.no_grad():
        for parameter in online.parameters():
            parameter.add_(0.5)
    before = {n: p.clone() for n, p in momentum.named_parameters()}
    momentum_update(online, momentum)
    for name, parameter in online.named_parameters():
        assert torch.equal(dict(momentum.named_parameters())[name], 0.999 * before[name] + (1 - 0.999) * parameter)


def test_momentum_update_refuses_mismatched_modules():
    with pytest.raises(ValueError, match="shape mismatches"):
        momentum_update(nn.Linear(4, 3), nn.Linear(4, 5))
    with pytest.raises(ValueError, match="only in online"):
        momentum_update(small_head(0), nn.ModuleDict({"a": nn.Linear(6, 8)}))
    with pytest.raises(ValueError, match="only in momentum"):
        momentum_update(nn.Linear(4, 3, bias=False), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="m must lie in"):
        momentum_update(small_head(0), small_head(1), m=1.0)


# ---------------------------------------------------------------- one training step, end to end


def test_one_step_with_clip_vision_towers():
    torch.manual_seed(0)
    config = CLIPVisionConfig(**tiny_vision_config())
    online = nn.ModuleDict({"encoder": CLIPVisionModel(config), "head": nn.Linear(config.hidden_size, 16)})
    momentum = copy.deepcopy(online).requires_grad_(False)
    classifier = nn.Linear(16, 7, bias=False)
    dictionary = MultiQueueDictionary(num_classes=7, queue_size=8, feature_dim=16)
    dictionary.enqueue(torch.randn(12, 16), torch.arange(12) % 7)

    def embed(module, pixels):
        return F.normalize(module["head"](module["encoder"](pixel_values=pixels).pooler_output), dim=-1)

    size = config.image_size
    view_q, view_k = torch.randn(6, 3, size, size), torch.randn(6, 3, size, size)
    labels = torch.tensor([0, 1, 1, 3, 6, 6])
    queries = embed(online, view_q)
    momentum_update(online, momentum)
    with torch.no_grad():
        keys = embed(momentum, view_k)
    negative_keys, negative_labels = dictionary.keys_and_labels()
    total = emoco_loss(
        emotion_classification_loss(queries, classifier.weight, labels),
        emotion_aware_contrastive_loss(queries, keys, labels, negative_keys, negative_labels, classifier.weight),
    )
    total.backward()
    dictionary.enqueue(keys, labels)
    assert torch.isfinite(total) and total.item() > 0
    assert all(p.grad is None for p in momentum.parameters())
    assert online["head"].weight.grad.abs().sum() > 0 and classifier.weight.grad.abs().sum() > 0
    assert dictionary.filled_slots.tolist() == [3, 4, 2, 3, 2, 1, 3]

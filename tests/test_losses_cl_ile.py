"""Each loss of clef_hf.cl_ile against a direct, loop-based computation of its CL-ILE equation, plus hand-computed
values, gradients, edge cases and shape errors."""

import inspect
import math

import pytest
import torch

from clef_hf.cl_ile import (
    EMBEDDING_DIM,
    au_bce_loss,
    identity_loss,
    label_contrastive_loss,
    orthogonality_loss,
    selective_learning_weights,
    stage_one_loss,
    stage_two_loss,
)

DTYPE = torch.float64
SEEDS = [0, 1, 2]
HALF_LOG_2 = 0.5 * math.log(2.0)


def randn(*shape: int, seed: int = 0, requires_grad: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=DTYPE).requires_grad_(requires_grad)


def random_au_labels(batch: int, num_aus: int, seed: int, unknown: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed + 1000)
    low = -1 if unknown else 0
    return torch.randint(low, 2, (batch, num_aus), generator=generator)


# ---------------------------------------------------------------- plain-Python vector algebra for the references


def to_list(v) -> list[float]:
    return [float(x) for x in v.detach()]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def norm(a: list[float]) -> float:
    return math.sqrt(dot(a, a))


def cos(a: list[float], b: list[float]) -> float:
    return dot(a, b) / (norm(a) * norm(b))


def sigmoid(s: float) -> float:
    return 1.0 / (1.0 + math.exp(-s))


# ---------------------------------------------------------------- loop references, one per equation


def loop_identity(ile) -> float:
    """Eq. 1 written out, in the reading of the docstring: sims to AU means over sims to subject means."""
    num_subjects, num_aus = ile.shape[0], ile.shape[1]
    e = [[[x / norm(to_list(ile[i, j])) for x in to_list(ile[i, j])] for j in range(num_aus)]
         for i in range(num_subjects)]
    dim = len(e[0][0])
    subject_mean = [[sum(e[i][j][d] for j in range(num_aus)) / num_aus for d in range(dim)]
                    for i in range(num_subjects)]
    au_mean = [[sum(e[i][j][d] for i in range(num_subjects)) / num_subjects for d in range(dim)]
               for j in range(num_aus)]
    to_au = sum(abs(cos(e[i][j], au_mean[j])) for i in range(num_subjects) for j in range(num_aus))
    to_subject = sum(abs(cos(e[i][j], subject_mean[i])) for i in range(num_subjects) for j in range(num_aus))
    return math.log(to_au / to_subject)


def loop_bce(features, au_embeddings, labels, weights=None, subject_ids=None) -> float:
    """Eq. 2 written out: inner product of the raw feature with the unit AU embedding, weight on both terms."""
    batch, num_aus = labels.shape
    total = 0.0
    for i in range(batch):
        for c in range(num_aus):
            y = int(labels[i, c])
            if y < 0:
                continue
            embedding = to_list(au_embeddings[int(subject_ids[i]), c] if subject_ids is not None else au_embeddings[c])
            s = dot(to_list(features[i]), embedding) / norm(embedding)
            if weights is None:
                w = 1.0
            elif weights.dim() == 1:
                w = float(weights[c])
            else:
                w = float(weights[i, c])
            p = sigmoid(s)
            total += -w * (y * math.log(p) + (1 - y) * math.log(1 - p))
    return total / (batch * num_aus)


def loop_orthogonality(identity_features, general_features) -> float:
    """Eq. 4 written out: the batch mean of log |cos|."""
    values = [
        math.log(abs(cos(to_list(a), to_list(b)))) for a, b in zip(identity_features, general_features)
    ]
    return sum(values) / len(values)


def loop_contrastive(features, au_embeddings, labels, temperature) -> float:
    """Eq. 5 written out: per image, the mean over its present AUs of -log softmax over all AUs."""
    batch, num_aus = labels.shape
    total = 0.0
    for i in range(batch):
        anchor = to_list(features[i])
        scores = [math.exp(cos(anchor, to_list(au_embeddings[c])) / temperature) for c in range(num_aus)]
        positives = [c for c in range(num_aus) if int(labels[i, c]) == 1]
        if positives:
            total += sum(-math.log(scores[p] / sum(scores)) for p in positives) / len(positives)
    return total / batch


# ---------------------------------------------------------------- paper values


def test_defaults_are_the_papers_hyperparameters():
    # Sec. 4.1: λ = 0.4; λ_1 = 1, λ_2 = 0.5, λ_3 = 0.4; τ = 2; all embeddings 512-d.
    assert inspect.signature(stage_one_loss).parameters["bce_weight"].default == 0.4
    stage_two = inspect.signature(stage_two_loss).parameters
    assert stage_two["bce_weight"].default == 1.0
    assert stage_two["orthogonality_weight"].default == 0.5
    assert stage_two["contrastive_weight"].default == 0.4
    assert inspect.signature(label_contrastive_loss).parameters["temperature"].default == 2.0
    assert EMBEDDING_DIM == 512


def test_losses_run_at_the_papers_embedding_size():
    features, ile = randn(4, EMBEDDING_DIM, seed=1), randn(3, 12, EMBEDDING_DIM, seed=2)
    labels = random_au_labels(4, 12, seed=3)
    for value in (
        identity_loss(ile),
        au_bce_loss(features, ile, labels, subject_ids=torch.tensor([0, 2, 2, 1])),
        label_contrastive_loss(features, ile[0], labels),
        orthogonality_loss(features, randn(4, EMBEDDING_DIM, seed=4)),
    ):
        assert value.dim() == 0 and torch.isfinite(value)


# ---------------------------------------------------------------- Eq. 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(4, 3, 8), (1, 5, 6), (6, 1, 4), (7, 12, 16)])
def test_identity_loss_matches_loop(seed, shape):
    ile = randn(*shape, seed=seed)
    assert float(identity_loss(ile)) == pytest.approx(loop_identity(ile), abs=1e-10)


def test_identity_loss_hand_values_and_sign():
    e1, e2 = torch.tensor([1.0, 0.0], dtype=DTYPE), torch.tensor([0.0, 1.0], dtype=DTYPE)
    # Clustered by subject: ILE[i, j] = e_i. Each sits on its subject mean (|cos| = 1, sum 4) and at 45 degrees from
    # its AU mean (e1 + e2) / 2 (|cos| = 1/sqrt 2, sum 4/sqrt 2): L_ID = log(1/sqrt 2).
    by_subject = torch.stack([torch.stack([e1, e1]), torch.stack([e2, e2])])
    assert float(identity_loss(by_subject)) == pytest.approx(-HALF_LOG_2, abs=1e-12)
    # Clustered by AU: ILE[i, j] = e_j, the case the loss should penalise.
    by_au = by_subject.transpose(0, 1)
    assert float(identity_loss(by_au)) == pytest.approx(HALF_LOG_2, abs=1e-12)
    # The ILEs are normalised: rescaling single embeddings changes nothing.
    scales = torch.tensor([[3.0, 0.5], [7.0, 0.1]], dtype=DTYPE)[..., None]
    assert float(identity_loss(by_subject * scales)) == pytest.approx(-HALF_LOG_2, abs=1e-12)


def test_identity_loss_descent_clusters_by_subject_and_spreads_by_au():
    ile = randn(5, 4, 16, seed=3, requires_grad=True)

    def mean_abs_cos():
        e = torch.nn.functional.normalize(ile.detach(), dim=-1)
        subject_means = torch.nn.functional.normalize(e.mean(dim=1, keepdim=True), dim=-1)
        au_means = torch.nn.functional.normalize(e.mean(dim=0, keepdim=True), dim=-1)
        return (e * subject_means).sum(-1).abs().mean(), (e * au_means).sum(-1).abs().mean()

    to_subject_before, to_au_before = mean_abs_cos()
    optimizer = torch.optim.SGD([ile], lr=0.5)
    for _ in range(100):
        optimizer.zero_grad()
        identity_loss(ile).backward()
        optimizer.step()
    to_subject_after, to_au_after = mean_abs_cos()
    assert to_subject_after > to_subject_before + 0.1
    assert to_au_after < to_au_before - 0.1


def test_identity_loss_degenerate_shapes_are_finite():
    assert float(identity_loss(randn(1, 1, 4, seed=5))) == 0.0
    identical = randn(1, 1, 4, seed=6).expand(3, 5, 4)
    assert float(identity_loss(identical)) == pytest.approx(0.0, abs=1e-12)
    for shape in [(1, 6, 4), (6, 1, 4)]:
        ile = randn(*shape, seed=7, requires_grad=True)
        loss = identity_loss(ile)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(ile.grad).all()


def test_identity_loss_gradients_are_finite():
    ile = randn(4, 3, 8, seed=8, requires_grad=True)
    identity_loss(ile).backward()
    assert torch.isfinite(ile.grad).all() and ile.grad.abs().sum() > 0


def test_identity_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="identity_label_embeddings"):
        identity_loss(randn(4, 8))
    with pytest.raises(ValueError, match="identity_label_embeddings"):
        identity_loss(randn(0, 3, 8))


# ---------------------------------------------------------------- Eq. 2


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch, num_subjects, num_aus, dim", [(6, 4, 5, 8), (1, 1, 3, 4), (9, 3, 12, 16)])
def test_au_bce_loss_matches_loop_with_identity_label_embeddings(seed, batch, num_subjects, num_aus, dim):
    features, ile = randn(batch, dim, seed=seed), randn(num_subjects, num_aus, dim, seed=seed + 10)
    subject_ids = torch.randint(0, num_subjects, (batch,), generator=torch.Generator().manual_seed(seed))
    labels = random_au_labels(batch, num_aus, seed)
    ours = au_bce_loss(features, ile, labels, subject_ids=subject_ids)
    assert float(ours) == pytest.approx(loop_bce(features, ile, labels, subject_ids=subject_ids), abs=1e-10)

    per_au = torch.rand(num_aus, generator=torch.Generator().manual_seed(seed), dtype=DTYPE) * 3
    ours = au_bce_loss(features, ile, labels, au_weights=per_au, subject_ids=subject_ids)
    assert float(ours) == pytest.approx(loop_bce(features, ile, labels, per_au, subject_ids), abs=1e-10)

    per_entry = torch.rand(batch, num_aus, generator=torch.Generator().manual_seed(seed + 1), dtype=DTYPE) * 3
    ours = au_bce_loss(features, ile, labels, au_weights=per_entry, subject_ids=subject_ids)
    assert float(ours) == pytest.approx(loop_bce(features, ile, labels, per_entry, subject_ids), abs=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch, num_aus, dim", [(5, 3, 8), (8, 12, 16)])
def test_au_bce_loss_matches_loop_with_shared_au_embeddings(seed, batch, num_aus, dim):
    features, au_embeddings = randn(batch, dim, seed=seed), randn(num_aus, dim, seed=seed + 20)
    labels = random_au_labels(batch, num_aus, seed)
    weights = torch.rand(num_aus, generator=torch.Generator().manual_seed(seed), dtype=DTYPE) * 3
    ours = au_bce_loss(features, au_embeddings, labels, au_weights=weights)
    assert float(ours) == pytest.approx(loop_bce(features, au_embeddings, labels, weights), abs=1e-10)
    # Shared embeddings are the ILE case with every subject alike.
    replicated = au_embeddings.expand(3, num_aus, dim)
    subject_ids = torch.arange(batch) % 3
    assert torch.allclose(ours, au_bce_loss(features, replicated, labels, au_weights=weights, subject_ids=subject_ids))


def test_au_bce_loss_hand_values():
    # The feature is used as it is (inner product), the AU embedding is normalised: s = [3, 4] · [0, 1] = 4.
    features = torch.tensor([[3.0, 4.0]], dtype=DTYPE)
    au_embeddings = torch.tensor([[0.0, 2.0]], dtype=DTYPE)
    present, absent = torch.tensor([[1]]), torch.tensor([[0]])
    assert float(au_bce_loss(features, au_embeddings, present)) == pytest.approx(math.log1p(math.exp(-4.0)), abs=1e-12)
    assert float(au_bce_loss(features, au_embeddings, absent)) == pytest.approx(math.log1p(math.exp(4.0)), abs=1e-12)
    # w_c weighs the negative term too (CLEF's au_loss weighs only the positive one).
    weight = torch.tensor([2.5], dtype=DTYPE)
    assert float(au_bce_loss(features, au_embeddings, absent, au_weights=weight)) == pytest.approx(
        2.5 * math.log1p(math.exp(4.0)), abs=1e-12
    )
    # Scaling the feature changes the logit; scaling the AU embedding does not.
    assert float(au_bce_loss(2 * features, au_embeddings, present)) == pytest.approx(math.log1p(math.exp(-8.0)))
    assert float(au_bce_loss(features, 10 * au_embeddings, present)) == pytest.approx(math.log1p(math.exp(-4.0)))


def test_au_bce_loss_unknowns_count_in_the_mean():
    features, au_embeddings = randn(2, 4, seed=30), randn(2, 4, seed=31)
    labels = torch.tensor([[1, -1], [-1, -1]])
    only_known = au_bce_loss(features[:1], au_embeddings[:1], torch.tensor([[1]]))
    # One known entry out of B * C = 4.
    assert float(au_bce_loss(features, au_embeddings, labels)) == pytest.approx(float(only_known) / 4, abs=1e-12)


def test_au_bce_loss_edge_cases_are_finite():
    features, ile = randn(4, 6, seed=32, requires_grad=True), randn(3, 5, 6, seed=33, requires_grad=True)
    subject_ids = torch.tensor([0, 0, 2, 1])
    # All unknown: 0 with zero, finite gradients.
    loss = au_bce_loss(features, ile, torch.full((4, 5), -1), subject_ids=subject_ids)
    loss.backward()
    assert loss.item() == 0.0 and float(features.grad.abs().sum()) == 0.0 and torch.isfinite(ile.grad).all()
    # All absent (every AU without a positive in the batch), or all present.
    for value in (0, 1):
        features.grad, ile.grad = None, None
        labels = torch.full((4, 5), value)
        loss = au_bce_loss(features, ile, labels, subject_ids=subject_ids)
        assert loss.item() == pytest.approx(loop_bce(features, ile, labels, subject_ids=subject_ids), abs=1e-10)
        loss.backward()
        assert torch.isfinite(features.grad).all() and torch.isfinite(ile.grad).all()


def test_au_bce_loss_gradients_reach_only_the_batch_subjects():
    features, ile = randn(4, 6, seed=34, requires_grad=True), randn(5, 3, 6, seed=35, requires_grad=True)
    subject_ids = torch.tensor([0, 3, 3, 1])
    au_bce_loss(features, ile, random_au_labels(4, 3, seed=36, unknown=False), subject_ids=subject_ids).backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    per_subject = ile.grad.abs().sum(dim=(1, 2))
    assert (per_subject[[0, 1, 3]] > 0).all() and (per_subject[[2, 4]] == 0).all()


def test_au_bce_loss_rejects_bad_inputs():
    features, ile, shared = randn(2, 4), randn(3, 5, 4), randn(5, 4)
    labels = torch.zeros(2, 5, dtype=torch.long)
    ids = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="features"):
        au_bce_loss(randn(4), shared, labels)
    with pytest.raises(ValueError, match="au_embeddings"):
        au_bce_loss(features, randn(1, 3, 5, 4), labels, subject_ids=ids)
    with pytest.raises(ValueError, match="au_embeddings"):
        au_bce_loss(features, randn(5, 6), labels)
    with pytest.raises(ValueError, match="subject_ids"):
        au_bce_loss(features, ile, labels)
    with pytest.raises(ValueError, match="subject_ids"):
        au_bce_loss(features, ile, labels, subject_ids=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="subject_ids"):
        au_bce_loss(features, ile, labels, subject_ids=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="subject_ids"):
        au_bce_loss(features, shared, labels, subject_ids=ids)
    with pytest.raises(ValueError, match="labels"):
        au_bce_loss(features, shared, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels of 1, 0 or -1"):
        au_bce_loss(features, shared, torch.tensor([[1, 0, 9, 0, 0], [0, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="au_weights"):
        au_bce_loss(features, shared, labels, au_weights=torch.ones(4, dtype=DTYPE))


# ---------------------------------------------------------------- Eq. 3


def test_stage_one_loss_hand_values_and_gradients():
    # λ L_BCE + (1 - λ) L_ID with λ = 0.4: 0.4 * 1.0 + 0.6 * -0.5 = 0.1 (a swapped λ would give 0.4).
    assert float(stage_one_loss(torch.tensor(1.0), torch.tensor(-0.5))) == pytest.approx(0.1)
    assert float(stage_one_loss(torch.tensor(1.0), torch.tensor(-0.5), bce_weight=0.7)) == pytest.approx(0.55)
    bce, ident = torch.tensor(1.0, requires_grad=True), torch.tensor(-0.5, requires_grad=True)
    stage_one_loss(bce, ident).backward()
    assert bce.grad.item() == pytest.approx(0.4) and ident.grad.item() == pytest.approx(0.6)


@pytest.mark.parametrize("seed", SEEDS)
def test_stage_one_loss_is_the_weighted_sum_of_eq1_and_eq2(seed):
    features, ile = randn(6, 8, seed=seed), randn(4, 5, 8, seed=seed + 40)
    subject_ids = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(seed))
    labels = random_au_labels(6, 5, seed)
    total = stage_one_loss(au_bce_loss(features, ile, labels, subject_ids=subject_ids), identity_loss(ile))
    expected = 0.4 * loop_bce(features, ile, labels, subject_ids=subject_ids) + 0.6 * loop_identity(ile)
    assert float(total) == pytest.approx(expected, abs=1e-10)


def test_stage_one_loss_rejects_non_scalars():
    with pytest.raises(ValueError, match="bce_loss"):
        stage_one_loss(torch.ones(2), torch.tensor(0.0))
    with pytest.raises(ValueError, match="identity_loss"):
        stage_one_loss(torch.tensor(0.0), torch.ones(1))


# ---------------------------------------------------------------- Eq. 4


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch, dim", [(1, 4), (6, 8), (16, 32)])
def test_orthogonality_loss_matches_loop(seed, batch, dim):
    identity_features, general_features = randn(batch, dim, seed=seed), randn(batch, dim, seed=seed + 50)
    ours = orthogonality_loss(identity_features, general_features)
    assert float(ours) == pytest.approx(loop_orthogonality(identity_features, general_features), abs=1e-10)


def test_orthogonality_loss_hand_values_and_sign():
    identity = torch.tensor([[1.0, 0.0]], dtype=DTYPE)
    # cos = 1/sqrt 2, and the absolute value makes the opposite direction count the same.
    for general in ([1.0, 1.0], [-1.0, 1.0], [5.0, -5.0]):
        value = orthogonality_loss(identity, torch.tensor([general], dtype=DTYPE))
        assert float(value) == pytest.approx(-HALF_LOG_2, abs=1e-12)
    # Parallel features give the maximum, 0; closer to orthogonal is lower (a flipped sign would reverse this).
    assert float(orthogonality_loss(identity, torch.tensor([[2.0, 0.0]], dtype=DTYPE))) == pytest.approx(0.0)
    nearly_orthogonal = orthogonality_loss(identity, torch.tensor([[1.0, 10.0]], dtype=DTYPE))
    assert float(nearly_orthogonal) == pytest.approx(math.log(1 / math.sqrt(101)), abs=1e-12)
    assert float(nearly_orthogonal) < -HALF_LOG_2


def test_orthogonality_loss_exactly_orthogonal_is_finite():
    identity = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=DTYPE)
    general = torch.tensor([[0.0, 3.0], [1.0, 0.0]], dtype=DTYPE, requires_grad=True)
    loss = orthogonality_loss(identity, general)
    assert loss.item() == pytest.approx(math.log(1e-6))
    loss.backward()
    assert torch.isfinite(general.grad).all()
    assert orthogonality_loss(identity, general, eps=1e-3).item() == pytest.approx(math.log(1e-3))


def test_orthogonality_loss_is_flat_below_its_floor():
    # |cos| = 0.2 and 0.6: with a floor of 0.3 the first is the constant log 0.3 (no gradient), the second Eq. 4.
    identity = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=DTYPE)
    general = torch.tensor([[0.2, math.sqrt(1 - 0.04)], [0.6, 0.8]], dtype=DTYPE, requires_grad=True)
    loss = orthogonality_loss(identity, general, eps=0.3)
    assert loss.item() == pytest.approx((math.log(0.3) + math.log(0.6)) / 2)
    loss.backward()
    assert torch.count_nonzero(general.grad[0]) == 0 and torch.count_nonzero(general.grad[1]) > 0


def test_orthogonality_loss_gradients_are_finite():
    identity, general = randn(5, 8, seed=51), randn(5, 8, seed=52, requires_grad=True)
    orthogonality_loss(identity, general).backward()
    assert torch.isfinite(general.grad).all() and general.grad.abs().sum() > 0


def test_orthogonality_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="general_features"):
        orthogonality_loss(randn(4, 8), randn(4, 6))
    with pytest.raises(ValueError, match="general_features"):
        orthogonality_loss(randn(4, 8), randn(3, 8))
    with pytest.raises(ValueError, match="identity_features"):
        orthogonality_loss(randn(8), randn(8))


# ---------------------------------------------------------------- Eq. 5


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch, num_aus, dim", [(1, 3, 4), (6, 5, 8), (12, 12, 16)])
@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_label_contrastive_loss_matches_loop(seed, batch, num_aus, dim, temperature):
    features, au_embeddings = randn(batch, dim, seed=seed), randn(num_aus, dim, seed=seed + 60)
    labels = random_au_labels(batch, num_aus, seed)
    ours = label_contrastive_loss(features, au_embeddings, labels, temperature=temperature)
    assert float(ours) == pytest.approx(loop_contrastive(features, au_embeddings, labels, temperature), abs=1e-10)


def test_label_contrastive_loss_hand_values():
    # Anchor e1 against AU embeddings e1 and e2: cosines 1 and 0, divided by τ = 2 inside the exponential.
    feature = torch.tensor([[1.0, 0.0]], dtype=DTYPE)
    au_embeddings = torch.tensor([[3.0, 0.0], [0.0, 0.5]], dtype=DTYPE)
    one_positive = label_contrastive_loss(feature, au_embeddings, torch.tensor([[1, 0]]))
    assert float(one_positive) == pytest.approx(math.log1p(math.exp(-0.5)), abs=1e-12)
    # τ = 1 gives a different value (as would exp(cos) / τ, in which τ cancels).
    at_one = label_contrastive_loss(feature, au_embeddings, torch.tensor([[1, 0]]), temperature=1.0)
    assert float(at_one) == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)
    # Two positives: the mean of their -log probabilities.
    log_partition = math.log(math.exp(0.5) + 1.0)
    both = label_contrastive_loss(feature, au_embeddings, torch.tensor([[1, 1]]))
    assert float(both) == pytest.approx(((log_partition - 0.5) + log_partition) / 2, abs=1e-12)
    # The unknown AU is no positive but stays in the denominator.
    with_unknown = label_contrastive_loss(feature, au_embeddings, torch.tensor([[1, -1]]))
    assert float(with_unknown) == pytest.approx(float(one_positive), abs=1e-12)


def test_label_contrastive_loss_image_without_positives_contributes_zero_and_counts():
    features, au_embeddings = randn(2, 6, seed=61), randn(4, 6, seed=62)
    alone = label_contrastive_loss(features[:1], au_embeddings, torch.tensor([[1, 0, 1, 0]]))
    mixed = label_contrastive_loss(features, au_embeddings, torch.tensor([[1, 0, 1, 0], [0, 0, -1, 0]]))
    assert float(mixed) == pytest.approx(float(alone) / 2, abs=1e-12)


def test_label_contrastive_loss_all_zero_labels_is_zero_with_finite_gradients():
    features, au_embeddings = randn(4, 6, seed=63, requires_grad=True), randn(3, 6, seed=64, requires_grad=True)
    loss = label_contrastive_loss(features, au_embeddings, torch.zeros(4, 3, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(features.grad).all() and float(features.grad.abs().sum()) == 0.0


def test_label_contrastive_loss_gradients_and_learnable_temperature():
    features, au_embeddings = randn(5, 6, seed=65, requires_grad=True), randn(4, 6, seed=66, requires_grad=True)
    temperature = torch.tensor(2.0, dtype=DTYPE, requires_grad=True)
    labels = random_au_labels(5, 4, seed=67, unknown=False)
    labels[0] = torch.tensor([1, 0, 0, 0])  # at least one positive
    label_contrastive_loss(features, au_embeddings, labels, temperature=temperature).backward()
    for tensor in (features, au_embeddings, temperature):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_label_contrastive_loss_is_scale_invariant():
    features, au_embeddings = randn(4, 6, seed=68), randn(3, 6, seed=69)
    labels = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]])
    base = label_contrastive_loss(features, au_embeddings, labels)
    assert torch.allclose(label_contrastive_loss(7 * features, 0.2 * au_embeddings, labels), base)


def test_label_contrastive_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="labels"):
        label_contrastive_loss(randn(4, 6), randn(3, 6), torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels of 1, 0 or -1"):
        label_contrastive_loss(randn(1, 6), randn(3, 6), torch.tensor([[2, 0, 0]]))
    with pytest.raises(ValueError, match="au_embeddings"):
        label_contrastive_loss(randn(4, 6), randn(3, 5), torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="features"):
        label_contrastive_loss(randn(2, 4, 6), randn(3, 6), torch.zeros(2, 3, dtype=torch.long))


# ---------------------------------------------------------------- Eq. 6


def test_stage_two_loss_hand_values_and_gradients():
    # 1 * 1.0 + 0.5 * -2.0 + 0.4 * 3.0 = 1.2 (swapping λ_2 and λ_3 would give 1.7).
    bce, orth, contra = torch.tensor(1.0), torch.tensor(-2.0), torch.tensor(3.0)
    assert float(stage_two_loss(bce, orth, contra)) == pytest.approx(1.2)
    overridden = stage_two_loss(bce, orth, contra, bce_weight=2.0, orthogonality_weight=0.1, contrastive_weight=1.0)
    assert float(overridden) == pytest.approx(2.0 - 0.2 + 3.0)
    bce, orth, contra = (torch.tensor(v, requires_grad=True) for v in (1.0, -2.0, 3.0))
    stage_two_loss(bce, orth, contra).backward()
    assert (bce.grad.item(), orth.grad.item(), contra.grad.item()) == pytest.approx((1.0, 0.5, 0.4))


@pytest.mark.parametrize("seed", SEEDS)
def test_stage_two_loss_is_the_weighted_sum_of_eq2_eq4_eq5(seed):
    general, identity, au_embeddings = randn(6, 8, seed=seed), randn(6, 8, seed=seed + 70), randn(5, 8, seed=seed + 80)
    labels = random_au_labels(6, 5, seed)
    total = stage_two_loss(
        au_bce_loss(general, au_embeddings, labels),
        orthogonality_loss(identity, general),
        label_contrastive_loss(general, au_embeddings, labels),
    )
    expected = (
        1.0 * loop_bce(general, au_embeddings, labels)
        + 0.5 * loop_orthogonality(identity, general)
        + 0.4 * loop_contrastive(general, au_embeddings, labels, 2.0)
    )
    assert float(total) == pytest.approx(expected, abs=1e-10)


def test_stage_two_loss_rejects_non_scalars():
    scalar = torch.tensor(0.0)
    with pytest.raises(ValueError, match="bce_loss"):
        stage_two_loss(torch.ones(3), scalar, scalar)
    with pytest.raises(ValueError, match="orthogonality_loss"):
        stage_two_loss(scalar, torch.ones(3), scalar)
    with pytest.raises(ValueError, match="contrastive_loss"):
        stage_two_loss(scalar, scalar, torch.ones(3))


# ---------------------------------------------------------------- Selective Learning weights (w_c of Eq. 2)


def loop_selective_learning(labels, target=0.5) -> list[list[float]]:
    rows = [[int(v) for v in row] for row in labels]
    weights = [[0.0] * len(rows[0]) for _ in rows]
    for c in range(len(rows[0])):
        column = [row[c] for row in rows]
        positives, negatives = column.count(1), column.count(0)
        for i, value in enumerate(column):
            if value < 0:
                continue
            if positives == 0 or negatives == 0:
                weights[i][c] = 1.0
            elif value == 1:
                weights[i][c] = target / (positives / (positives + negatives))
            else:
                weights[i][c] = (1 - target) / (negatives / (positives + negatives))
    return weights


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", [0.5, 0.2])
def test_selective_learning_weights_match_loop(seed, target):
    labels = random_au_labels(9, 6, seed)
    labels[:, 0] = 1  # an AU with no negative in the batch
    labels[:, 1] = -1  # an AU with no known label
    weights = selective_learning_weights(labels, target)
    assert torch.allclose(weights, torch.tensor(loop_selective_learning(labels, target), dtype=weights.dtype))


def test_selective_learning_weights_balance_each_au_to_the_target():
    """1 positive and 3 negatives of an AU: the positive weighs 0.5 / 0.25 = 2 and each negative 0.5 / 0.75, so both
    sides carry half of the AU's total weight."""
    labels = torch.tensor([[1, 0], [0, 1], [0, -1], [0, 0]])
    weights = selective_learning_weights(labels)
    assert weights[:, 0].tolist() == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3])
    assert weights[:, 1].tolist() == pytest.approx([0.75, 1.5, 0.0, 0.75])
    positive_share = (weights * (labels == 1)).sum(0) / weights.sum(0)
    assert positive_share.tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="target_rate"):
        selective_learning_weights(labels, 1.0)
    with pytest.raises(ValueError, match="batch, num_aus"):
        selective_learning_weights(labels[0])

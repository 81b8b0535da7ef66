"""The local evaluate metrics of clef_hf.metrics: offline loading, batching, and results against loop-based references.

HF_HUB_OFFLINE=1 is set by conftest.py, so a metric that tried to reach the Hub would fail to load here.
"""

import json
import re
from pathlib import Path

import evaluate
import numpy as np
import pytest

import clef_hf
from clef_hf.metrics import AU_F1, AU_INTENSITY, EXPRESSION_ACCURACY, METRICS_DIR, available_metrics, load_metric

AU_IDS = ["AU1", "AU2", "AU4", "AU6", "AU12", "AU15"]
EXPRESSION_IDS = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]
ABSENT_CLASS = 5  # never a reference in the random expression data


# ---------------------------------------------------------------- loop references


def loop_au_f1(predictions: list[list[int]], references: list[list[int]]) -> list[float]:
    """Per-AU F1 written out: skip -1 references, count TP/FP/FN, F1 = 2TP/(2TP+FP+FN), 0.0 with no positives."""
    scores = []
    for au in range(len(predictions[0])):
        tp = fp = fn = 0
        for prediction_row, reference_row in zip(predictions, references):
            p, r = prediction_row[au], reference_row[au]
            if r == -1:
                continue
            if p == 1 and r == 1:
                tp += 1
            elif p == 1 and r == 0:
                fp += 1
            elif p == 0 and r == 1:
                fn += 1
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0)
    return scores


def loop_confusion(predictions: list[int], references: list[int], num_classes: int) -> list[list[int]]:
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for p, r in zip(predictions, references):
        matrix[r][p] += 1
    return matrix


def loop_per_class_accuracy(predictions: list[int], references: list[int], num_classes: int) -> list[float | None]:
    accuracies = []
    for c in range(num_classes):
        hits = [p == c for p, r in zip(predictions, references) if r == c]
        accuracies.append(sum(hits) / len(hits) if hits else None)
    return accuracies


# ---------------------------------------------------------------- data


@pytest.fixture
def au_data() -> tuple[list[list[int]], list[list[int]]]:
    """(57, 6) random AU predictions and references with -1 entries; AU index 5 has no positives at all."""
    rng = np.random.default_rng(0)
    n, k = 57, len(AU_IDS)
    predictions = rng.integers(0, 2, size=(n, k))
    references = rng.choice([-1, 0, 1], p=[0.2, 0.45, 0.35], size=(n, k))
    predictions[:, 5] = 0
    references[:, 5] = rng.choice([-1, 0], size=n)
    # The -1 test below needs -1 references under positive predictions (they would become false positives).
    assert ((references == -1) & (predictions == 1)).any()
    return predictions.tolist(), references.tolist()


@pytest.fixture
def expression_data() -> tuple[list[int], list[int]]:
    """(83,) random predictions and references over 7 classes; class ABSENT_CLASS is predicted but never a reference."""
    rng = np.random.default_rng(1)
    n = 83
    references = rng.choice([c for c in range(len(EXPRESSION_IDS)) if c != ABSENT_CLASS], size=n)
    # Mostly correct, so per-class accuracies differ from one another and from chance.
    predictions = np.where(rng.random(n) < 0.6, references, rng.integers(0, len(EXPRESSION_IDS), size=n))
    assert (predictions == ABSENT_CLASS).any()
    return predictions.tolist(), references.tolist()


def add_in_batches(metric: evaluate.EvaluationModule, predictions: list, references: list, sizes: list[int]) -> None:
    start = 0
    for size in sizes:
        metric.add_batch(predictions=predictions[start : start + size], references=references[start : start + size])
        start += size
    assert start == len(predictions)


# ---------------------------------------------------------------- loading


def test_metric_modules_ship_inside_the_package():
    assert METRICS_DIR == Path(clef_hf.__file__).resolve().parent / "metrics"
    assert available_metrics() == [AU_F1, AU_INTENSITY, EXPRESSION_ACCURACY]
    for name in available_metrics():
        folder = METRICS_DIR / name
        assert (folder / f"{name}.py").is_file()
        # evaluate scripts, not packages: find_packages must not pick them up, package_data ships them.
        assert not (folder / "__init__.py").exists()


@pytest.mark.parametrize("name", [AU_F1, AU_INTENSITY, EXPRESSION_ACCURACY])
def test_metric_modules_import_only_standard_dependencies(name):
    """evaluate copies the script out of the package, so it must not import clef_hf; one import per line."""
    source = (METRICS_DIR / name / f"{name}.py").read_text()
    imports = re.findall(r"^(?:import|from)\s+([^\n]+)$", source, flags=re.MULTILINE)
    assert imports
    for statement in imports:
        assert "," not in statement, statement
        assert statement.split()[0].split(".")[0] in {"datasets", "evaluate", "numpy"}, statement


@pytest.mark.parametrize("name", [AU_F1, AU_INTENSITY, EXPRESSION_ACCURACY])
def test_load_metric_offline(name):
    metric = load_metric(name, num_process=1, process_id=0, experiment_id=f"test-{name}")
    assert isinstance(metric, evaluate.Metric)
    assert metric.name == name
    assert metric.experiment_id == f"test-{name}"
    assert (metric.num_process, metric.process_id) == (1, 0)


@pytest.mark.parametrize("name", ["f1", "accuracy", "../metrics", "au_f1/", ""])
def test_load_metric_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="available metrics: au_f1, au_intensity, expression_accuracy"):
        load_metric(name)


# ---------------------------------------------------------------- au_f1


def test_au_f1_matches_loop(au_data):
    predictions, references = au_data
    result = load_metric(AU_F1).compute(predictions=predictions, references=references, label_ids=AU_IDS)
    expected = loop_au_f1(predictions, references)
    assert set(result) == {"mean_f1", "f1", "per_label_f1", "support"}
    assert result["f1"] == pytest.approx(expected, abs=1e-12)
    assert result["mean_f1"] == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    assert list(result["per_label_f1"]) == AU_IDS
    assert list(result["per_label_f1"].values()) == result["f1"]
    assert result["support"] == [sum(row[au] == 1 for row in references) for au in range(len(AU_IDS))]
    # The random data is not degenerate: AUs score differently and well inside (0, 1).
    assert len(set(result["f1"][:5])) == 5
    assert all(0.0 < score < 1.0 for score in result["f1"][:5])
    json.dumps(result, allow_nan=False)


def test_au_f1_batches_equal_single_call(au_data):
    predictions, references = au_data
    single = load_metric(AU_F1).compute(predictions=predictions, references=references, label_ids=AU_IDS)
    metric = load_metric(AU_F1)
    add_in_batches(metric, predictions, references, [10, 1, 20, 26])
    assert metric.compute(label_ids=AU_IDS) == single
    # numpy batches go through the same Arrow cache.
    metric = load_metric(AU_F1)
    add_in_batches(metric, np.asarray(predictions), np.asarray(references), [30, 27])
    assert metric.compute(label_ids=AU_IDS) == single


def test_au_f1_ignores_unknown_references(au_data):
    predictions, references = au_data
    metric = load_metric(AU_F1)
    ignored = metric.compute(predictions=predictions, references=references)["f1"]
    as_zero = [[max(value, 0) for value in row] for row in references]
    treated_as_absent = metric.compute(predictions=predictions, references=as_zero)["f1"]
    assert treated_as_absent == pytest.approx(loop_au_f1(predictions, as_zero), abs=1e-12)
    assert ignored != pytest.approx(treated_as_absent, abs=1e-6)
    # -1 under a positive prediction would be a false positive if read as 0, so F1 only drops.
    assert all(a <= b + 1e-12 for a, b in zip(treated_as_absent, ignored))


def test_au_f1_ignores_unknown_per_au_not_per_row():
    # Row 1 is unknown for AU1 only; it is still a true positive for AU2.
    result = load_metric(AU_F1).compute(predictions=[[1, 1], [1, 1], [0, 0]], references=[[1, 0], [-1, 1], [0, 1]])
    assert result["f1"] == pytest.approx([1.0, 2 * 1 / (2 * 1 + 1 + 1)])
    assert result["support"] == [1, 2]


def test_au_f1_without_positives_scores_zero(au_data):
    predictions, references = au_data
    result = load_metric(AU_F1).compute(predictions=predictions, references=references)
    assert result["f1"][5] == 0.0 and result["support"][5] == 0
    # AU1: all absent, never predicted; AU2: all unknown; AU3: perfect. The zeros count in the mean.
    result = load_metric(AU_F1).compute(
        predictions=[[0, 1, 1], [0, 1, 0]], references=[[0, -1, 1], [0, -1, 0]], label_ids=["a", "b", "c"]
    )
    assert result == {
        "mean_f1": pytest.approx(1 / 3),
        "f1": [0.0, 0.0, 1.0],
        "per_label_f1": {"a": 0.0, "b": 0.0, "c": 1.0},
        "support": [0, 0, 1],
    }


def test_au_f1_per_label_keys_default_to_indices(au_data):
    predictions, references = au_data
    result = load_metric(AU_F1).compute(predictions=predictions, references=references)
    assert list(result["per_label_f1"]) == [str(i) for i in range(len(AU_IDS))]
    assert list(result["per_label_f1"].values()) == result["f1"]


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        ([[1, 0], [1]], [[1, 0], [1, 0]], {}, r"predictions\[1\] has 1 AUs but predictions\[0\] has 2"),
        ([[1, 0], [1, 0]], [[1, 0], [1, 0, 1]], {}, r"references\[1\] has 3 AUs but references\[0\] has 2"),
        ([[1, 0], [1, 0]], [[1, 0, 0], [1, 0, 0]], {}, "predictions have 2 AUs per row but references have 3"),
        ([[1, 0]], [[1, 0]], {"label_ids": ["AU1"]}, "label_ids has 1 entries but .* 2 AUs"),
        ([[1, 0]], [[1, 0]], {"label_ids": ["AU1", "AU1"]}, r"label_ids has duplicates: \['AU1'\]"),
        ([[1, 2]], [[1, 0]], {}, r"predictions\[0\]\[1\] is 2; allowed values are \[0, 1\]"),
        ([[1, 0]], [[0, -2]], {}, r"references\[0\]\[1\] is -2; allowed values are \[-1, 0, 1\]"),
    ],
)
def test_au_f1_rejects_bad_input(predictions, references, kwargs, message):
    # In memory: a compute that raises leaves its cache-file lock held, and the next instance would wait 1 s on it.
    metric = load_metric(AU_F1, keep_in_memory=True)
    with pytest.raises(ValueError, match=message):
        metric.compute(predictions=predictions, references=references, **kwargs)


# ---------------------------------------------------------------- expression_accuracy


def test_expression_accuracy_matches_loop(expression_data):
    predictions, references = expression_data
    num_classes = len(EXPRESSION_IDS)
    result = load_metric(EXPRESSION_ACCURACY).compute(
        predictions=predictions, references=references, label_ids=EXPRESSION_IDS
    )
    per_class = loop_per_class_accuracy(predictions, references, num_classes)
    present = [value for value in per_class if value is not None]
    assert set(result) == {
        "accuracy",
        "per_class_accuracy",
        "mean_class_accuracy",
        "confusion_matrix",
        "per_label_accuracy",
    }
    assert result["accuracy"] == pytest.approx(sum(p == r for p, r in zip(predictions, references)) / len(references))
    assert result["confusion_matrix"] == loop_confusion(predictions, references, num_classes)
    assert result["per_class_accuracy"] == pytest.approx(per_class)
    assert result["per_class_accuracy"][ABSENT_CLASS] is None
    assert result["mean_class_accuracy"] == pytest.approx(sum(present) / len(present))
    # Mean class accuracy weights classes equally, so on unbalanced data it differs from accuracy.
    assert result["mean_class_accuracy"] != pytest.approx(result["accuracy"], abs=1e-6)
    assert result["per_label_accuracy"] == dict(zip(EXPRESSION_IDS, result["per_class_accuracy"]))
    # The absent class is predicted, so its column is non-empty while its row is empty.
    assert sum(result["confusion_matrix"][ABSENT_CLASS]) == 0
    assert sum(row[ABSENT_CLASS] for row in result["confusion_matrix"]) > 0
    json.dumps(result, allow_nan=False)


def test_expression_accuracy_batches_equal_single_call(expression_data):
    predictions, references = expression_data
    single = load_metric(EXPRESSION_ACCURACY).compute(
        predictions=predictions, references=references, label_ids=EXPRESSION_IDS
    )
    metric = load_metric(EXPRESSION_ACCURACY)
    add_in_batches(metric, predictions, references, [40, 1, 42])
    assert metric.compute(label_ids=EXPRESSION_IDS) == single


def test_expression_accuracy_num_classes_defaults():
    metric = load_metric(EXPRESSION_ACCURACY)
    # From the largest label seen, here a prediction.
    result = metric.compute(predictions=[0, 3], references=[0, 1])
    assert result["confusion_matrix"] == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert result["per_class_accuracy"] == [1.0, 0.0, None, None]
    assert result["mean_class_accuracy"] == 0.5
    assert result["per_label_accuracy"] == {"0": 1.0, "1": 0.0, "2": None, "3": None}
    # From label_ids, beyond the largest label seen.
    result = metric.compute(predictions=[0, 1], references=[0, 1], label_ids=["a", "b", "c"])
    assert len(result["confusion_matrix"]) == 3 and result["per_label_accuracy"] == {"a": 1.0, "b": 1.0, "c": None}
    # Explicit.
    result = metric.compute(predictions=[0, 1], references=[0, 1], num_classes=5)
    assert len(result["per_class_accuracy"]) == 5


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        ([0, 1, 2, 3], [0, 1, 2, 9], {"num_classes": 7}, r"references\[3\] is 9, outside \[0, 7\)"),
        ([0, 7], [0, 1], {"label_ids": EXPRESSION_IDS}, r"predictions\[1\] is 7, outside \[0, 7\)"),
        ([0, -1], [0, 1], {}, r"predictions\[1\] is -1, outside \[0, 2\)"),
        ([-2], [-3], {}, r"predictions\[0\] is -2, outside \[0, 1\)"),
        ([0, 1], [0, 1], {"num_classes": 3, "label_ids": ["a", "b"]}, "label_ids has 2 entries but num_classes is 3"),
        ([0, 1], [0, 1], {"label_ids": ["a", "a"]}, r"label_ids has duplicates: \['a'\]"),
    ],
)
def test_expression_accuracy_rejects_bad_input(predictions, references, kwargs, message):
    # In memory: a compute that raises leaves its cache-file lock held, and the next instance would wait 1 s on it.
    metric = load_metric(EXPRESSION_ACCURACY, keep_in_memory=True)
    with pytest.raises(ValueError, match=message):
        metric.compute(predictions=predictions, references=references, **kwargs)


# ---------------------------------------------------------------- au_intensity


def anova_icc_3_1(ratings: list[list[float]]) -> float:
    """ICC(3,1) of Shrout & Fleiss (1979), Table 2, from the two-way ANOVA written out with loops: n targets (rows)
    rated by k judges (columns); ICC(3,1) = (BMS - EMS) / (BMS + (k - 1) EMS)."""
    n, k = len(ratings), len(ratings[0])
    grand = sum(sum(row) for row in ratings) / (n * k)
    row_means = [sum(row) / k for row in ratings]
    column_means = [sum(ratings[i][j] for i in range(n)) / n for j in range(k)]
    between_targets = k * sum((m - grand) ** 2 for m in row_means)
    between_judges = n * sum((m - grand) ** 2 for m in column_means)
    total = sum((ratings[i][j] - grand) ** 2 for i in range(n) for j in range(k))
    residual = total - between_targets - between_judges
    bms = between_targets / (n - 1)
    ems = residual / ((n - 1) * (k - 1))
    return (bms - ems) / (bms + (k - 1) * ems)


def test_au_intensity_hand_example():
    """Worked by hand: AU a's prediction is its reference plus 1 everywhere (consistency ICC 1, MAE 1, r 1); AU b's
    prediction is constant (ICC 0, r 0 by convention, MAE = mean |2 - y| = (2 + 1 + 0 + 1) / 4 = 1); AU c has one
    known reference only and is left out of the means."""
    metric = load_metric(AU_INTENSITY, keep_in_memory=True)
    result = metric.compute(
        predictions=[[1.0, 2.0, 0.0], [2.0, 2.0, 1.0], [3.0, 2.0, 2.0], [4.0, 2.0, 3.0]],
        references=[[0.0, 0.0, 1.0], [1.0, 1.0, -1.0], [2.0, 2.0, -1.0], [3.0, 3.0, -1.0]],
        label_ids=["a", "b", "c"],
    )
    assert result["icc"][:2] == pytest.approx([1.0, 0.0], abs=1e-12)
    assert result["mae"][:2] == pytest.approx([1.0, 1.0])
    assert result["pearson"][:2] == pytest.approx([1.0, 0.0], abs=1e-12)
    assert result["icc"][2] is None and result["per_label_mae"]["c"] is None
    assert result["support"] == [4, 4, 1]
    assert result["mean_icc"] == pytest.approx(0.5) and result["mean_mae"] == pytest.approx(1.0)


def test_au_intensity_icc_matches_the_two_way_anova_and_known_values():
    # Shrout & Fleiss's own example has 6 targets and 4 judges; with the metric's k = 2 judges (prediction,
    # reference) its first two judges give ICC(3,1) computed here with the ANOVA above.
    judge_1, judge_2 = [9, 6, 8, 7, 10, 6], [2, 1, 4, 1, 5, 2]
    expected = anova_icc_3_1([[a, b] for a, b in zip(judge_1, judge_2)])
    result = load_metric(AU_INTENSITY, keep_in_memory=True).compute(
        predictions=[[float(a)] for a in judge_1], references=[[float(b)] for b in judge_2])
    assert result["mean_icc"] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.7453, abs=1e-4)  # BMS 4.683, EMS 0.683: (BMS - EMS) / (BMS + EMS)

    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 5, size=(50, 3))
    guess = truth * 0.5 + rng.normal(0, 0.7, size=truth.shape)
    truth[::7, 1] = -1  # unknown: ignored for AU 1 only
    result = load_metric(AU_INTENSITY, keep_in_memory=True).compute(predictions=guess.tolist(),
                                                                    references=truth.tolist())
    for au in range(3):
        known = truth[:, au] >= 0
        pairs = [[g, t] for g, t in zip(guess[known, au], truth[known, au])]
        assert result["icc"][au] == pytest.approx(anova_icc_3_1(pairs), rel=1e-10)
        assert result["mae"][au] == pytest.approx(np.abs(guess[known, au] - truth[known, au]).mean())
        assert result["pearson"][au] == pytest.approx(np.corrcoef(guess[known, au], truth[known, au])[0, 1])
    assert result["support"] == [50, 50 - len(range(0, 50, 7)), 50]


def test_au_intensity_constant_prediction_has_zero_icc():
    """The trivial baseline (each AU's training mean) scores ICC 0 whatever the references."""
    references = [[0.5], [3.0], [1.0], [4.5]]
    result = load_metric(AU_INTENSITY, keep_in_memory=True).compute(predictions=[[2.2]] * 4, references=references)
    assert result["mean_icc"] == pytest.approx(0.0, abs=1e-12) and result["mean_pearson"] == 0.0
    assert result["mean_mae"] == pytest.approx(np.mean([1.7, 0.8, 1.2, 2.3]))


@pytest.mark.parametrize(
    "predictions, references, message",
    [
        ([], [], "empty"),
        ([[1.0], [1.0, 2.0]], [[1.0], [1.0]], "every row needs one entry per AU"),
        ([[1.0, 2.0]], [[1.0]], "2 AUs per row but references have 1"),
        ([[float("nan")]], [[1.0]], "must be finite"),
        ([[1.0], [2.0]], [[-1.0], [3.0]], "No AU has 2 or more known"),
    ],
)
def test_au_intensity_rejects_bad_input(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        load_metric(AU_INTENSITY, keep_in_memory=True).compute(predictions=predictions, references=references)

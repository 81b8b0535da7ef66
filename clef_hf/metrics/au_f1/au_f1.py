"""The `au_f1` evaluate metric: per-AU and mean F1 for multi-label facial action unit (AU) detection.

This file is an `evaluate` module, not part of the `clef_hf` Python package: `evaluate.load` copies it into its module
cache and imports it there, so it imports only numpy, datasets and evaluate (never `clef_hf`). Load it offline with
`clef_hf.metrics.load_metric("au_f1")` or `evaluate.load("<path to this folder>")`.

Conventions:
    * References are 1 (AU present), 0 (absent) or -1 (unknown / not annotated). A -1 entry is ignored for that AU
      only: the row still counts for the other AUs.
    * F1 of one AU is 2·TP / (2·TP + FP + FN) over its non-ignored rows.
    * An AU with neither positive references nor positive predictions (TP = FP = FN = 0) gets F1 = 0.0. This matches
      `sklearn.metrics.f1_score(..., zero_division=0)` (sklearn's default, minus the warning), which is what the AU
      literature (BP4D / DISFA protocols) uses, so the mean F1 stays comparable with published numbers.
    * `mean_f1` is the unweighted mean over all AUs, including AUs that scored 0.0 by the convention above.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Per-AU F1 and their unweighted mean for multi-label facial action unit detection. Each example is one face: a 0/1
prediction per AU and a reference per AU that is 1 (present), 0 (absent) or -1 (unknown, ignored for that AU).
An AU without any positive reference or prediction scores 0.0 (sklearn's zero_division=0 convention).
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[list[int]]`): (n, k) binary predictions, one row per face, one 0/1 entry per AU.
    references (`list[list[int]]`): (n, k) references, 1 present, 0 absent, -1 unknown (ignored for that AU).
    label_ids (`list[str]`, *optional*): k names of the AUs (e.g. ["AU1", "AU2"]), used as keys of `per_label_f1`.

Returns:
    mean_f1 (`float`): unweighted mean of the k per-AU F1 scores.
    f1 (`list[float]`): k per-AU F1 scores, 2TP / (2TP + FP + FN) over the non-ignored rows of each AU.
    per_label_f1 (`dict[str, float]`): the same scores keyed by label id, or by "0", "1", ... without label_ids.
    support (`list[int]`): k counts of positive (1) references per AU.

Examples:
    >>> metric = evaluate.load("clef_hf/metrics/au_f1")
    >>> metric.compute(predictions=[[1, 0], [0, 1]], references=[[1, -1], [0, 1]], label_ids=["AU1", "AU2"])
    {'mean_f1': 1.0, 'f1': [1.0, 1.0], 'per_label_f1': {'AU1': 1.0, 'AU2': 1.0}, 'support': [1, 1]}
"""

_CITATION = """\
@inproceedings{zhang2023weakly,
  title={Weakly-Supervised Text-driven Contrastive Learning for Facial Behavior Understanding},
  author={Zhang, Xiang and Wang, Taoyue and Li, Xiaotian and Yang, Huiyuan and Yin, Lijun},
  booktitle={ICCV},
  year={2023}
}
"""


def _as_matrix(rows: list, name: str, allowed: tuple[int, ...]) -> np.ndarray:
    """Stack `rows` into an (n, k) int64 matrix, raising ValueError on ragged rows or values outside `allowed`."""
    if len(rows) == 0:
        raise ValueError(f"{name} is empty: au_f1 needs at least one example")
    width = len(rows[0])
    for index, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(
                f"{name}[{index}] has {len(row)} AUs but {name}[0] has {width}: every row needs one entry per AU"
            )
    if width == 0:
        raise ValueError(f"{name} rows are empty: au_f1 needs at least one AU")
    matrix = np.asarray(rows, dtype=np.int64).reshape(len(rows), width)
    bad = ~np.isin(matrix, allowed)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}[{row}][{column}] is {int(matrix[row, column])}; allowed values are {list(allowed)}")
    return matrix


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AuF1(evaluate.Metric):
    """Per-AU F1 over non-ignored rows (-1 references are ignored), their mean, and the positive counts."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(
        self,
        predictions: list[list[int]],
        references: list[list[int]],
        label_ids: list[str] | None = None,
    ) -> dict:
        """Score (n, k) predictions against (n, k) references; see the module docstring for the conventions.

        Returns:
            {"mean_f1": float, "f1": list[float] (k,), "per_label_f1": dict[str, float] (k entries),
            "support": list[int] (k,)}
        """
        predicted = _as_matrix(predictions, "predictions", (0, 1))
        reference = _as_matrix(references, "references", (-1, 0, 1))
        if predicted.shape != reference.shape:
            raise ValueError(
                f"predictions have {predicted.shape[1]} AUs per row but references have {reference.shape[1]}"
            )
        num_aus = predicted.shape[1]
        if label_ids is None:
            keys = [str(index) for index in range(num_aus)]
        else:
            keys = [str(label) for label in label_ids]
            if len(keys) != num_aus:
                raise ValueError(f"label_ids has {len(keys)} entries but predictions and references have {num_aus} AUs")
            if len(set(keys)) != len(keys):
                # Duplicate keys would silently merge entries of per_label_f1.
                duplicates = sorted({key for key in keys if keys.count(key) > 1})
                raise ValueError(f"label_ids has duplicates: {duplicates}")

        # A -1 reference masks that (row, AU) cell out of TP, FP and FN alike.
        known = reference != -1
        positive_prediction = (predicted == 1) & known
        positive_reference = (reference == 1) & known
        true_positives = (positive_prediction & positive_reference).sum(axis=0)
        false_positives = (positive_prediction & ~positive_reference).sum(axis=0)
        false_negatives = (~positive_prediction & positive_reference).sum(axis=0)
        denominator = 2 * true_positives + false_positives + false_negatives
        # denominator == 0 means no positives at all for that AU: F1 := 0.0 (sklearn zero_division=0).
        f1 = np.where(denominator > 0, 2 * true_positives / np.maximum(denominator, 1), 0.0)

        scores = [float(value) for value in f1]
        return {
            "mean_f1": float(np.mean(f1)),
            "f1": scores,
            "per_label_f1": dict(zip(keys, scores)),
            "support": [int(value) for value in positive_reference.sum(axis=0)],
        }

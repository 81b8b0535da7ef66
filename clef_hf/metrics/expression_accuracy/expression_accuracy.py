"""The `expression_accuracy` evaluate metric: accuracy, per-class accuracy and confusion matrix for expressions.

This file is an `evaluate` module, not part of the `clef_hf` Python package: `evaluate.load` copies it into its module
cache and imports it there, so it imports only numpy, datasets and evaluate (never `clef_hf`). Load it offline with
`clef_hf.metrics.load_metric("expression_accuracy")` or `evaluate.load("<path to this folder>")`.

Conventions:
    * Labels are class indices in [0, num_classes). num_classes defaults to len(label_ids), else to the largest
      label seen (in predictions or references) plus one.
    * The accuracy of class c is its recall: the fraction of examples with reference c that were predicted c.
    * A class absent from the references has no defined accuracy; it is reported as None (not NaN, so results stay
      valid JSON) and is left out of `mean_class_accuracy`, the unweighted mean over the classes that occur.
    * `confusion_matrix[r][p]` counts examples with reference class r predicted as class p.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Overall accuracy, per-class accuracy (recall), mean class accuracy over the classes present in the references, and
the confusion matrix for single-label facial expression recognition. Classes absent from the references get None.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[int]`): (n,) predicted class indices.
    references (`list[int]`): (n,) reference class indices.
    num_classes (`int`, *optional*): c, the number of classes; defaults to len(label_ids), else max label + 1.
    label_ids (`list[str]`, *optional*): c class names (e.g. ["neutral", "happy", ...]), the keys of
        `per_label_accuracy`.

Returns:
    accuracy (`float`): fraction of examples predicted correctly.
    per_class_accuracy (`list[float | None]`): c recalls; None for classes absent from the references.
    mean_class_accuracy (`float`): unweighted mean of the non-None per-class accuracies.
    confusion_matrix (`list[list[int]]`): (c, c) counts, rows reference class, columns predicted class.
    per_label_accuracy (`dict[str, float | None]`): per_class_accuracy keyed by label id, or by "0", "1", ...
        without label_ids.

Examples:
    >>> metric = evaluate.load("clef_hf/metrics/expression_accuracy")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_classes=3)["per_class_accuracy"]
    [0.5, 1.0, None]
"""

_CITATION = """\
@inproceedings{zhang2023weakly,
  title={Weakly-Supervised Text-driven Contrastive Learning for Facial Behavior Understanding},
  author={Zhang, Xiang and Wang, Taoyue and Li, Xiaotian and Yang, Huiyuan and Yin, Lijun},
  booktitle={ICCV},
  year={2023}
}
"""


def _check_range(labels: np.ndarray, name: str, num_classes: int) -> None:
    """Raise ValueError naming the first entry of `labels` outside [0, num_classes)."""
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        index = int(np.argmax(bad))
        raise ValueError(
            f"{name}[{index}] is {int(labels[index])}, outside [0, {num_classes}) (num_classes={num_classes})"
        )


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExpressionAccuracy(evaluate.Metric):
    """Accuracy, per-class recall (None for absent classes), their mean and the confusion matrix."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(
        self,
        predictions: list[int],
        references: list[int],
        num_classes: int | None = None,
        label_ids: list[str] | None = None,
    ) -> dict:
        """Score (n,) predicted class indices against (n,) reference indices; see the module docstring.

        Returns:
            {"accuracy": float, "per_class_accuracy": list[float | None] (c,), "mean_class_accuracy": float,
            "confusion_matrix": list[list[int]] (c, c), "per_label_accuracy": dict[str, float | None] (c entries)}
        """
        predicted = np.asarray(predictions, dtype=np.int64).reshape(-1)
        reference = np.asarray(references, dtype=np.int64).reshape(-1)
        if reference.size == 0:
            raise ValueError("references is empty: expression_accuracy needs at least one example")
        if predicted.size != reference.size:
            raise ValueError(f"predictions has {predicted.size} entries but references has {reference.size}")

        keys = None if label_ids is None else [str(label) for label in label_ids]
        if keys is not None:
            if len(set(keys)) != len(keys):
                # Duplicate keys would silently merge entries of per_label_accuracy.
                duplicates = sorted({key for key in keys if keys.count(key) > 1})
                raise ValueError(f"label_ids has duplicates: {duplicates}")
            if num_classes is None:
                num_classes = len(keys)
            elif num_classes != len(keys):
                raise ValueError(f"label_ids has {len(keys)} entries but num_classes is {num_classes}")
        if num_classes is None:
            # At least 1 even if every label is negative, so that _check_range names the offending value.
            num_classes = max(int(predicted.max()), int(reference.max()), 0) + 1
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes is {num_classes}; it must be at least 1")
        _check_range(predicted, "predictions", num_classes)
        _check_range(reference, "references", num_classes)
        if keys is None:
            keys = [str(index) for index in range(num_classes)]

        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(confusion, (reference, predicted), 1)
        class_counts = confusion.sum(axis=1)
        per_class: list[float | None] = [
            float(confusion[c, c] / class_counts[c]) if class_counts[c] > 0 else None for c in range(num_classes)
        ]
        present = [value for value in per_class if value is not None]
        return {
            "accuracy": float(np.mean(predicted == reference)),
            "per_class_accuracy": per_class,
            # references is non-empty, so at least one class is present and the mean is defined.
            "mean_class_accuracy": float(np.mean(present)),
            "confusion_matrix": confusion.tolist(),
            "per_label_accuracy": dict(zip(keys, per_class)),
        }

"""The `au_intensity` evaluate metric: per-AU ICC(3,1), mean absolute error and Pearson correlation of predicted
against labelled action unit (AU) intensities, and their means over AUs.

This file is an `evaluate` module, not part of the `clef_hf` Python package: `evaluate.load` copies it into its module
cache and imports it there, so it imports only numpy, datasets and evaluate (never `clef_hf`). Load it offline with
`clef_hf.metrics.load_metric("au_intensity")` or `evaluate.load("<path to this folder>")`.

Conventions:
    * References are intensities 0-5 (floats allowed); a negative reference (the schema's -1) is unknown and ignored
      for that AU only.
    * ICC(3,1) is Shrout & Fleiss's (1979) two-way mixed, consistency, single-rater intraclass correlation, with the
      prediction and the reference as the k = 2 "raters" of each of the n frames, from a two-way ANOVA:
      `ICC = (MS_rows - MS_error) / (MS_rows + (k - 1) MS_error)`, `MS_rows = k Σ_i (m_i - m)² / (n - 1)`,
      `MS_error = SS_error / ((n - 1)(k - 1))`. It is the measure DISFA and FERA papers report for intensity.
    * A constant prediction (e.g. each AU's training mean) has ICC exactly 0 and, by the convention here, Pearson 0.
      ICC and Pearson are 0.0 when their denominator is 0 (no variance).
    * An AU with fewer than 2 known references has `None` for all three values and is left out of the means (e.g.
      the 7 of BP4D's 12 AUs without intensity codes); the means are unweighted over the other AUs.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Per-AU ICC(3,1), MAE and Pearson correlation between predicted and labelled AU intensities (0-5), and their unweighted
means over the AUs that have at least 2 known references. Negative references (-1) are unknown and ignored per AU.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list[list[float]]`): (n, k) predicted intensities, one row per face, one entry per AU.
    references (`list[list[float]]`): (n, k) labelled intensities 0-5, negative where unknown (ignored for that AU).
    label_ids (`list[str]`, *optional*): k names of the AUs, used as keys of the `per_label_*` dicts.

Returns:
    mean_icc, mean_mae, mean_pearson (`float`): unweighted means over the AUs with at least 2 known references.
    icc, mae, pearson (`list[float | None]`): k per-AU values (None for an AU with fewer than 2 known references).
    per_label_icc, per_label_mae, per_label_pearson (`dict[str, float | None]`): the same keyed by label id.
    support (`list[int]`): k counts of known references per AU.

Examples:
    >>> metric = evaluate.load("clef_hf/metrics/au_intensity")
    >>> metric.compute(predictions=[[0.0], [2.0], [4.0]], references=[[0.0], [2.0], [4.0]])["mean_icc"]
    1.0
"""

_CITATION = """\
@article{shrout1979intraclass,
  title={Intraclass correlations: uses in assessing rater reliability},
  author={Shrout, Patrick E and Fleiss, Joseph L},
  journal={Psychological Bulletin},
  volume={86},
  number={2},
  pages={420--428},
  year={1979}
}
"""


def _as_matrix(rows: list, name: str) -> np.ndarray:
    """Stack `rows` into an (n, k) float64 matrix, raising ValueError on ragged, empty or non-finite input."""
    if len(rows) == 0:
        raise ValueError(f"{name} is empty: au_intensity needs at least one example")
    width = len(rows[0])
    for index, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(
                f"{name}[{index}] has {len(row)} AUs but {name}[0] has {width}: every row needs one entry per AU"
            )
    if width == 0:
        raise ValueError(f"{name} rows are empty: au_intensity needs at least one AU")
    matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    bad = ~np.isfinite(matrix)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}[{row}][{column}] is {matrix[row, column]}; intensities must be finite numbers")
    return matrix


def icc_3_1(ratings: np.ndarray) -> float:
    """Shrout & Fleiss ICC(3,1) of an (n targets, k raters) matrix, from the two-way ANOVA; 0.0 without variance."""
    n, k = ratings.shape
    grand = ratings.mean()
    ss_rows = k * ((ratings.mean(axis=1) - grand) ** 2).sum()
    ss_columns = n * ((ratings.mean(axis=0) - grand) ** 2).sum()
    ss_error = ((ratings - grand) ** 2).sum() - ss_rows - ss_columns
    ms_rows = ss_rows / (n - 1)
    ms_error = ss_error / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error
    return float((ms_rows - ms_error) / denominator) if denominator > 1e-12 else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r of two vectors; 0.0 when either is constant."""
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx**2).sum() * (dy**2).sum())
    return float((dx * dy).sum() / denominator) if denominator > 1e-12 else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AuIntensity(evaluate.Metric):
    """Per-AU ICC(3,1), MAE and Pearson r over known references, and their means over AUs."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
        )

    def _compute(
        self,
        predictions: list[list[float]],
        references: list[list[float]],
        label_ids: list[str] | None = None,
    ) -> dict:
        """Score (n, k) predicted intensities against (n, k) references; see the module docstring."""
        predicted = _as_matrix(predictions, "predictions")
        reference = _as_matrix(references, "references")
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
                duplicates = sorted({key for key in keys if keys.count(key) > 1})
                raise ValueError(f"label_ids has duplicates: {duplicates}")

        iccs, maes, pearsons, support = [], [], [], []
        for au in range(num_aus):
            known = reference[:, au] >= 0
            support.append(int(known.sum()))
            if known.sum() < 2:
                iccs.append(None), maes.append(None), pearsons.append(None)
                continue
            truth, guess = reference[known, au], predicted[known, au]
            iccs.append(icc_3_1(np.stack([guess, truth], axis=1)))
            maes.append(float(np.abs(guess - truth).mean()))
            pearsons.append(pearson(guess, truth))
        scored = [au for au in range(num_aus) if iccs[au] is not None]
        if not scored:
            raise ValueError("No AU has 2 or more known (non-negative) intensity references: nothing to score")

        def mean(values: list) -> float:
            return float(np.mean([values[au] for au in scored]))

        return {
            "mean_icc": mean(iccs),
            "mean_mae": mean(maes),
            "mean_pearson": mean(pearsons),
            "icc": iccs,
            "mae": maes,
            "pearson": pearsons,
            "per_label_icc": dict(zip(keys, iccs)),
            "per_label_mae": dict(zip(keys, maes)),
            "per_label_pearson": dict(zip(keys, pearsons)),
            "support": support,
        }

"""Local `evaluate` metrics for CLEF, shipped inside the package so that they load offline.

`evaluate.load("f1")` fetches the metric script from the Hugging Face Hub and fails without a network. A metric loaded
from a local folder does not: `evaluate.load("<folder>")` imports `<folder>/<folder name>.py`. Each subfolder here is
such a module (it has no `__init__.py`: it is an evaluate script, not a Python package, and is installed as package
data, see `[options.package_data]` in setup.cfg):

    * `au_f1`: per-AU F1 (ignoring -1 "unknown" references) and their mean, for multi-label AU detection.
    * `expression_accuracy`: accuracy, per-class accuracy, mean class accuracy and confusion matrix, for expressions.
    * `au_intensity`: per-AU ICC(3,1), MAE and Pearson correlation of AU intensities (0-5), and their means.

Usage:

    >>> from clef_hf.metrics import AU_F1, load_metric
    >>> metric = load_metric(AU_F1)
    >>> metric.add_batch(predictions=[[1, 0]], references=[[1, -1]])
    >>> metric.compute(label_ids=["AU1", "AU2"])["mean_f1"]
"""

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).resolve().parent
"""The folder holding one subfolder per metric module."""

AU_F1 = "au_f1"
AU_INTENSITY = "au_intensity"
EXPRESSION_ACCURACY = "expression_accuracy"


def available_metrics() -> list[str]:
    """Names of the metric modules in METRICS_DIR: subfolders `<name>` holding `<name>.py`, sorted."""
    return sorted(path.name for path in METRICS_DIR.iterdir() if (path / f"{path.name}.py").is_file())


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """Load the local metric `name` (e.g. AU_F1) with `evaluate.load`, offline.

    Args:
        name: a metric folder name, one of `available_metrics()`.
        **kwargs: passed to `evaluate.load`, e.g. `num_process`, `process_id` and `experiment_id` for distributed
            evaluation (as set up from an Accelerate state), `cache_dir` or `keep_in_memory`.

    Raises:
        ValueError: `name` is not a metric of this package; the message lists the available names.
    """
    available = available_metrics()
    # Checking membership (rather than joining the name onto the path) also rejects names like "../x" or "au_f1/".
    if name not in available:
        raise ValueError(f"Unknown metric {name!r}; available metrics: {', '.join(available)}")
    return evaluate.load(str(METRICS_DIR / name), **kwargs)


__all__ = ["AU_F1", "AU_INTENSITY", "EXPRESSION_ACCURACY", "METRICS_DIR", "available_metrics", "load_metric"]

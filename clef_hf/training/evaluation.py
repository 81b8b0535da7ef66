"""Evaluation of CLEF models on a labelled split: the per-epoch evaluation of fine-tuning, the evaluation of a saved
checkpoint (`scripts/evaluate_model.py`), and the trivial baselines a model must beat.

A model's labels and a split's labels are matched by id, so a model can be evaluated on a data set that orders its
labels differently or has fewer of them (e.g. a BP4D AU model on DISFA's AUs in common, an 8-class expression model on
a 7-class set, where the prediction is the best of the set's classes).
"""

import json
import os
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from ..metrics import AU_F1, AU_INTENSITY, EXPRESSION_ACCURACY, load_metric
from ..modeling_clef import CLEFModel
from ..processing_clef import CLEFProcessor
from .arguments import EvaluationArguments
from .data import FacialBehaviorCollator, get_split, load_splits
from .initialization import labels_of_split

#: The metric that selects a model (the best epoch, a decision threshold, a reference's C), per task.
BEST_METRIC = {"au": "mean_f1", "expression": "accuracy"}
#: The metric that selects the epoch of an AU intensity model (`--au_intensity`): the mean ICC(3,1) over AUs.
INTENSITY_BEST_METRIC = "intensity_mean_icc"
#: The AU probability thresholds tried on the validation split: 0.05, 0.10, ..., 0.95.
AU_THRESHOLD_GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))


def align_labels(model_label_ids: list[str], split_label_ids: list[str], task: str) -> tuple[list[int], list[int]]:
    """Which model outputs and which split columns (AUs) or classes (expressions) to compare.

    Returns:
        `(model_indices, split_indices)`, aligned: `model_indices[k]` predicts the split's label `split_indices[k]`.
        AUs: the AUs both have, in the split's order. Expressions: every class of the split, which the model must have.
    """
    position = {label: index for index, label in enumerate(model_label_ids)}
    if task == "expression":
        missing = [label for label in split_label_ids if label not in position]
        if missing:
            raise ValueError(f"The split's expression classes {missing} are not among the model's {model_label_ids}.")
        return [position[label] for label in split_label_ids], list(range(len(split_label_ids)))
    common = [(position[label], index) for index, label in enumerate(split_label_ids) if label in position]
    if not common:
        raise ValueError(f"The model's AUs {model_label_ids} and the split's {split_label_ids} have none in common.")
    return [m for m, _ in common], [s for _, s in common]


@dataclass
class LabelScores:
    """A model's scores on a split, gathered from every process.

    Attributes:
        scores: (n, num_compared) AU probabilities `sigmoid(logit)` (AUs) or logits over the split's classes
            (expressions).
        references: (n, num_compared) AU labels, 1 / 0 / -1 unknown (AUs), or (n,) class indices (expressions).
        label_ids: the compared labels, in the split's order.
        intensity: (n, num_compared) predicted AU intensities, for an `au_intensity` model on batches with an
            `au_intensity` column; else None.
        intensity_references: (n, num_compared) labelled intensities (-1 unknown), or None.
    """

    scores: torch.Tensor
    references: torch.Tensor
    label_ids: list[str]
    intensity: torch.Tensor | None = None
    intensity_references: torch.Tensor | None = None


@torch.no_grad()
def label_scores(
    accelerator: Accelerator,
    model: CLEFModel,
    dataloader: DataLoader,
    task: str,
    label_embeds: torch.Tensor,
    split_label_ids: list[str] | None = None,
    intensity_embeds_override: torch.Tensor | None = None,
    test_time_flip: bool | None = None,
) -> LabelScores:
    """The scores of `model` on the batches of `dataloader` (prepared by `accelerator`), every process's rows
    gathered (the padding of uneven batches dropped), on the CPU.

    Args:
        model: the unwrapped model.
        task: "au" or "expression"; the batches carry the labels under this key.
        label_embeds: (num_model_labels, projection_dim) normalised label embeddings to compare images with.
        split_label_ids: the split's label ids in column / class order; defaults to the model's.
        intensity_embeds_override: (num_model_labels, num_levels, projection_dim) intensity phrase embeddings of an
            `au_intensity` model; defaults to its `intensity_embeddings` buffer. The intensity is scored when the
            batches carry an `au_intensity` column.
        test_time_flip: embed each image with its mirror image too ([`CLEFModel.get_image_embeddings`]); defaults
            to `model.config.test_time_flip`.
    """
    model_label_ids = list(model.config.label_ids)
    split_label_ids = list(split_label_ids or model_label_ids)
    model_indices, split_indices = align_labels(model_label_ids, split_label_ids, task)
    selected = label_embeds[model_indices].float()  # (num_compared, projection_dim)
    intensity_embeds = None
    if task == "au" and getattr(model.config, "au_intensity", False):
        intensity_embeds = (model._stored_intensity_embeddings() if intensity_embeds_override is None
                            else intensity_embeds_override)[model_indices]
    was_training = model.training
    model.eval()
    scores, references, intensities, intensity_references = [], [], [], []
    for batch in dataloader:
        with accelerator.autocast():
            image_embeds = model.get_image_embeddings(batch["pixel_values"], test_time_flip)
        logits = image_embeds.float() @ selected.T / model.temperature.float()
        labels = batch[task]
        if task == "au":
            logits, labels = torch.sigmoid(logits), labels[:, split_indices]
        # Every process gathers all rows, so each can compute the metric on its own, in memory: no cache files, no
        # cross-process file locks.
        batch_scores, batch_references = accelerator.gather_for_metrics((logits, labels))
        scores.append(batch_scores.cpu())
        references.append(batch_references.cpu())
        if intensity_embeds is not None and "au_intensity" in batch:
            predicted = model.predict_intensity(image_embeds.float(), intensity_embeds)
            batch_intensity, batch_truth = accelerator.gather_for_metrics(
                (predicted, batch["au_intensity"][:, split_indices].float()))
            intensities.append(batch_intensity.cpu())
            intensity_references.append(batch_truth.cpu())
    model.train(was_training)
    return LabelScores(torch.cat(scores), torch.cat(references), [split_label_ids[index] for index in split_indices],
                       torch.cat(intensities) if intensities else None,
                       torch.cat(intensity_references) if intensity_references else None)


def prediction_metrics(predictions: list, references: list, task: str, label_ids: list[str]) -> dict:
    """The project's metrics (`clef_hf.metrics`) of predictions: per-AU F1 and their mean, -1 references ignored,
    for (n, num_aus) 0/1 predictions (AUs); accuracy, per-class accuracy and the confusion matrix for (n,) class
    indices (expressions). `label_ids` name the AUs or classes, in order."""
    if task == "au":
        return load_metric(AU_F1, keep_in_memory=True).compute(
            predictions=predictions, references=references, label_ids=label_ids)
    return load_metric(EXPRESSION_ACCURACY, keep_in_memory=True).compute(
        predictions=predictions, references=references, num_classes=len(label_ids), label_ids=label_ids)


def intensity_metrics(predictions: list, references: list, label_ids: list[str]) -> dict:
    """The `au_intensity` metric (`clef_hf.metrics`) of (n, num_aus) predicted against labelled intensities (-1
    unknown), its keys prefixed `intensity_`: `intensity_mean_icc`, `intensity_mean_mae`, `intensity_mean_pearson`,
    `intensity_per_label_icc`, ..."""
    values = load_metric(AU_INTENSITY, keep_in_memory=True).compute(
        predictions=predictions, references=references, label_ids=label_ids)
    return {f"intensity_{key}": value for key, value in values.items()}


def metrics_from_scores(scores: LabelScores, task: str, au_threshold: float = 0.5) -> dict:
    """[`prediction_metrics`] of `scores`: an AU is present when its probability exceeds `au_threshold` (AUs); the
    predicted class is the highest-scoring one (expressions). With intensities, the [`intensity_metrics`] too."""
    predictions = (scores.scores > au_threshold).long() if task == "au" else scores.scores.argmax(-1)
    metrics = prediction_metrics(predictions.tolist(), scores.references.tolist(), task, scores.label_ids)
    if scores.intensity is not None:
        metrics.update(intensity_metrics(scores.intensity.tolist(), scores.intensity_references.tolist(),
                                         scores.label_ids))
    return metrics


def intensity_baseline_metrics(train_split, eval_split, label_ids: list[str]) -> dict:
    """The held-out intensity metrics of the trivial predictor: each AU's mean known intensity on the training split
    for every face (ICC and Pearson 0 by construction; its MAE is the floor a model must beat)."""
    train = torch.tensor(list(train_split.select_columns(["au_intensity"])["au_intensity"]), dtype=torch.float64)
    known = train >= 0
    means = (train * known).sum(0) / known.sum(0).clamp(min=1)
    references = list(eval_split.select_columns(["au_intensity"])["au_intensity"])
    metrics = intensity_metrics([means.tolist()] * len(references), references, label_ids)
    return {"intensity_training_means": dict(zip(label_ids, means.tolist())), **metrics}


def evaluate_model(
    accelerator: Accelerator,
    model: CLEFModel,
    dataloader: DataLoader,
    task: str,
    label_embeds: torch.Tensor,
    split_label_ids: list[str] | None = None,
) -> dict:
    """Metrics of `model` on the batches of `dataloader` (prepared by `accelerator`).

    For AUs, per-AU F1 and their mean (an AU is present when `sigmoid(logit) > config.au_threshold`), and for an
    `au_intensity` model on batches with intensities the `intensity_*` metrics; for expressions, accuracy, per-class
    accuracy and the confusion matrix (the predicted class is the most similar of the split's classes). The arguments
    are those of [`label_scores`].
    """
    scores = label_scores(accelerator, model, dataloader, task, label_embeds, split_label_ids)
    return metrics_from_scores(scores, task, model.config.au_threshold)


def select_au_threshold(scores: LabelScores, thresholds: tuple[float, ...] = AU_THRESHOLD_GRID) -> tuple[float, dict]:
    """The global AU probability threshold of `thresholds` with the highest mean F1 on `scores` (ties go to the one
    nearest 0.5), and the metrics at it."""
    best = None
    for threshold in sorted(thresholds, key=lambda value: (abs(value - 0.5), value)):
        metrics = metrics_from_scores(scores, "au", threshold)
        if best is None or metrics["mean_f1"] > best[1]["mean_f1"]:
            best = (threshold, metrics)
    return best


def baseline_metrics(train_split, eval_split, task: str, label_ids: list[str]) -> dict:
    """The held-out metrics of a trivial predictor, a floor that a trained model must beat: every AU present (AUs),
    or the training split's most frequent class for every image (expressions)."""
    references = list(eval_split.select_columns([task])[task])
    if task == "au":
        return prediction_metrics([[1] * len(row) for row in references], references, task, label_ids)
    counts = torch.bincount(torch.tensor(list(train_split.select_columns([task])[task])), minlength=len(label_ids))
    majority = int(counts.argmax())
    return {"majority_class": label_ids[majority],
            **prediction_metrics([majority] * len(references), references, task, label_ids)}


def evaluate_checkpoint(args: EvaluationArguments) -> dict:
    """Evaluate a saved CLEF model, with the label embeddings stored in it, on a split of a data set.

    Returns:
        The metrics, with `model`, `dataset`, `split`, `task` and `num_images`; also written to `args.output_file`.
    """
    accelerator = Accelerator(cpu=args.cpu, mixed_precision=args.mixed_precision)
    set_seed(0)
    model = CLEFModel.from_pretrained(args.model_name_or_path)
    processor = CLEFProcessor.from_pretrained(args.model_name_or_path)
    task = model.config.task
    if task not in ("au", "expression"):
        raise ValueError(f"{args.model_name_or_path} has task {task!r}: only fine-tuned AU or expression models "
                         "can be evaluated.")
    with accelerator.main_process_first():
        splits = load_splits(args)
    split = get_split(splits, args.split, ("image", task), "--split")
    split_label_ids = labels_of_split(split, task)["label_ids"]
    # An intensity model is also scored on intensity where the split has it.
    with_intensity = getattr(model.config, "au_intensity", False) and "au_intensity" in split.column_names
    label_columns = (task, "au_intensity") if with_intensity else (task,)
    dataloader = DataLoader(split, batch_size=args.per_device_eval_batch_size,
                            collate_fn=FacialBehaviorCollator(processor.image_processor, label_columns),
                            num_workers=args.dataloader_num_workers)
    model, dataloader = accelerator.prepare(model, dataloader)
    unwrapped = accelerator.unwrap_model(model)
    metrics = evaluate_model(accelerator, unwrapped, dataloader, task, unwrapped._stored_label_embeddings(),
                             split_label_ids)
    results = {"model": args.model_name_or_path, "dataset": args.dataset_name, "split": args.split, "task": task,
               "num_images": len(split), **metrics}
    if args.output_file and accelerator.is_main_process:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_file)), exist_ok=True)
        with open(args.output_file, "w") as file:
            json.dump(results, file, indent=1)
    return results


__all__ = [
    "AU_THRESHOLD_GRID",
    "BEST_METRIC",
    "LabelScores",
    "align_labels",
    "INTENSITY_BEST_METRIC",
    "baseline_metrics",
    "evaluate_checkpoint",
    "evaluate_model",
    "intensity_baseline_metrics",
    "intensity_metrics",
    "label_scores",
    "metrics_from_scores",
    "prediction_metrics",
    "select_au_threshold",
]

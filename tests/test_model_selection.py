"""Held-out model selection in stage 2 (`clef_hf.training.finetune`): the validation split picks the epoch and the AU
threshold, the test split is evaluated once with the saved best model; real runs of a tiny model on synthfaces cut
into train / validation / test by subject."""

import json

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import HfArgumentParser

from clef_hf import CLEFModel, CLEFProcessor
from clef_hf.training import EvaluationArguments, FineTuningArguments, evaluate_checkpoint, finetune
from clef_hf.training.evaluation import AU_THRESHOLD_GRID, baseline_metrics
from dataset_builders import build_dataset

pytestmark = pytest.mark.usefixtures("fresh_accelerator_state", "one_torch_thread")


@pytest.fixture(scope="module")
def three_splits(tmp_path_factory) -> str:
    """synthfaces of 7 subjects, 2 frames per task, 32 px: train 4 subjects (64 images), validation 1 (16, cut from
    the builder's train split by subject), test 2 (32); saved to disk."""
    root = tmp_path_factory.mktemp("three-splits")
    splits = build_dataset("synthfaces", cache_dir=str(root / "cache"), num_subjects=7, num_test_subjects=2,
                           frames_per_activity=2, image_size=32)
    held_out = sorted(set(splits["train"]["subject"]))[-1]
    datasets.DatasetDict({
        "train": splits["train"].filter(lambda subject: subject != held_out, input_columns="subject"),
        "validation": splits["train"].filter(lambda subject: subject == held_out, input_columns="subject"),
        "test": splits["test"],
    }).save_to_disk(str(root / "saved"))
    return str(root / "saved")


def run(output_dir, dataset, config_file, **overrides) -> dict:
    values = dict(output_dir=str(output_dir), dataset=dataset, config_file=config_file, task="au",
                  per_device_train_batch_size=16, per_device_eval_batch_size=32, num_train_epochs=4,
                  learning_rate=1e-3, report_to="none", logging_steps=1, seed=3)
    return finetune(FineTuningArguments(**{**values, **overrides}))


def positives(split: datasets.Dataset) -> list[int]:
    return (np.asarray(split["au"]) == 1).sum(0).tolist()


def probabilities(model_dir, split: datasets.Dataset) -> torch.Tensor:
    """(n, num_aus) AU probabilities of the saved model, through its processor and forward."""
    model, processor = CLEFModel.from_pretrained(model_dir).eval(), CLEFProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        inputs = processor(images=[image.convert("RGB") for image in split["image"]], return_tensors="pt")
        return torch.sigmoid(model(**inputs).logits)


def mean_f1(probability: torch.Tensor, truth: torch.Tensor, threshold: float) -> float:
    predicted = probability > threshold
    tp = (predicted & (truth == 1)).sum(0).float()
    return (2 * tp / (predicted.sum(0) + (truth == 1).sum(0)).clamp(min=1)).mean().item()


def test_validation_picks_the_epoch_and_threshold_and_the_test_split_is_scored_once(
        tmp_path, three_splits, tiny_config_file):
    results = run(tmp_path, three_splits, tiny_config_file)
    splits = datasets.load_from_disk(three_splits)

    # Every epoch is evaluated on the validation split, which picks the best one.
    assert results["eval_split"] == "validation" and results["test_split"] == "test"
    assert all(entry["support"] == positives(splits["validation"]) for entry in results["history"])
    assert results["best_metric"] == max(entry["mean_f1"] for entry in results["history"])
    assert results["best"]["epoch"] == results["best_epoch"]

    # The threshold is the one of the grid with the best validation F1 of the saved model, and is saved with it.
    best_dir = tmp_path / "best"
    threshold = results["au_threshold"]
    assert threshold in AU_THRESHOLD_GRID and CLEFModel.from_pretrained(best_dir).config.au_threshold == threshold
    validation_truth = torch.tensor(splits["validation"]["au"])
    validation_probability = probabilities(best_dir, splits["validation"])
    by_threshold = [mean_f1(validation_probability, validation_truth, t) for t in AU_THRESHOLD_GRID]
    assert mean_f1(validation_probability, validation_truth, threshold) == pytest.approx(max(by_threshold), abs=1e-6)
    assert results["validation"]["mean_f1"] == pytest.approx(max(by_threshold), abs=1e-6)
    assert results["validation"]["mean_f1"] >= results["best"]["mean_f1"]  # 0.5 is one of the thresholds tried

    # The test split: scored with the saved model and its threshold, its baseline on it too, logged once.
    test_truth = torch.tensor(splits["test"]["au"])
    assert results["test"]["support"] == positives(splits["test"])
    assert results["test"]["mean_f1"] == pytest.approx(
        mean_f1(probabilities(best_dir, splits["test"]), test_truth, threshold), abs=1e-6)
    AcceleratorState._reset_state(True)
    again = evaluate_checkpoint(EvaluationArguments(model_name_or_path=str(best_dir), dataset=three_splits,
                                                    split="test"))
    assert again["per_label_f1"] == pytest.approx(results["test"]["per_label_f1"], abs=1e-9)
    assert results["test_baseline"] == baseline_metrics(splits["train"], splits["test"], "au",
                                                        list(results["test"]["per_label_f1"]))
    saved = json.loads((best_dir / "eval_results.json").read_text())
    assert (saved["split"], saved["selection_split"], saved["epoch"], saved["au_threshold"]) == (
        "test", "validation", results["best_epoch"], threshold)
    assert saved["mean_f1"] == results["test"]["mean_f1"]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum("test/mean_f1" in line for line in lines) == 1
    assert json.loads((tmp_path / "all_results.json").read_text())["test"] == results["test"]


def test_the_test_split_sees_the_best_epochs_weights_not_the_last(tmp_path, three_splits, tiny_config_file):
    """Scoring the validation split as the "test" split, at the fixed threshold, gives back the best epoch's
    metrics exactly, although the last epoch scored otherwise."""
    results = run(tmp_path, three_splits, tiny_config_file, test_split="validation", select_au_threshold=False)
    last = results["history"][-1]
    assert results["best_epoch"] != last["epoch"] and last["mean_f1"] != results["best"]["mean_f1"], \
        "the run's last epoch is its best: the test shows nothing"
    assert results["test"]["f1"] == results["best"]["f1"]
    assert results["validation"]["f1"] == results["best"]["f1"]
    assert results["au_threshold"] == 0.5 == CLEFModel.from_pretrained(tmp_path / "best").config.au_threshold


def test_expressions_have_no_threshold_and_a_test_split_can_be_skipped(tmp_path, three_splits, tiny_config_file):
    results = run(tmp_path, three_splits, tiny_config_file, task="expression", num_train_epochs=1, test_split="")
    assert results["test"] is None and results["test_baseline"] is None and results["au_threshold"] is None
    assert results["validation"]["accuracy"] == results["best"]["accuracy"]
    saved = json.loads((tmp_path / "best" / "eval_results.json").read_text())
    assert saved["split"] == saved["selection_split"] == "validation"


def test_a_data_set_without_the_eval_split_is_refused_with_its_splits_named(tmp_path, tiny_faces, tiny_config_file):
    with pytest.raises(ValueError, match=r"--eval_split 'validation' is not a split of the data set; it has "
                                         r"\['test', 'train'\]\. Pass --eval_split .* --eval_split test --test_split"):
        run(tmp_path, tiny_faces, tiny_config_file)
    with pytest.raises(ValueError, match=r"--test_split 'heldout' is not a split"):
        run(tmp_path, tiny_faces, tiny_config_file, eval_split="test", test_split="heldout")


def test_the_command_line_skips_the_test_split_with_an_empty_string(tmp_path):
    parser = HfArgumentParser(FineTuningArguments)
    (args,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--config_file", "x.json",
                                                  "--test_split", "", "--select_au_threshold", "false"])
    assert args.test_split is None and args.select_au_threshold is False and args.eval_split == "validation"
    (defaults,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--config_file", "x.json"])
    assert (defaults.eval_split, defaults.test_split, defaults.select_au_threshold) == ("validation", "test", True)
    with pytest.raises(ValueError, match="--eval_split must name"):
        FineTuningArguments(output_dir=str(tmp_path), config_file="x.json", eval_split="")

"""Tests of clef_hf.training.evaluation: a saved checkpoint re-evaluated (in process and with scripts/evaluate_model.py)
reproduces the metrics of its best epoch; label sets are matched by id."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState

from clef_hf.training import EvaluationArguments, FineTuningArguments, evaluate_checkpoint, finetune
from clef_hf.training.evaluation import align_labels

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.mark.parametrize("task, key", [("au", "mean_f1"), ("expression", "accuracy")])
def test_a_saved_model_reproduces_its_best_epoch(tmp_path, tiny_faces, tiny_config_file, task, key):
    finetune(FineTuningArguments(
        output_dir=str(tmp_path / "run"), dataset=tiny_faces, config_file=tiny_config_file, task=task,
        per_device_train_batch_size=16, num_train_epochs=2, learning_rate=1e-3, report_to="none", seed=2,
        eval_split="test", test_split="",  # tiny_faces has train and test splits only
    ))
    AcceleratorState._reset_state(True)
    best = json.loads((tmp_path / "run" / "best" / "eval_results.json").read_text())
    output_file = tmp_path / "metrics.json"
    results = evaluate_checkpoint(EvaluationArguments(
        model_name_or_path=str(tmp_path / "run" / "best"), dataset=tiny_faces, per_device_eval_batch_size=7,
        output_file=str(output_file),
    ))
    assert results["task"] == task and results["num_images"] == 32
    assert results[key] == pytest.approx(best[key], abs=1e-9)
    assert json.loads(output_file.read_text())[key] == results[key]

    if task == "au":  # the command line gives the same
        completed = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "evaluate_model.py"), "--model_name_or_path", str(tmp_path / "run" / "best"),
             "--dataset", tiny_faces, "--output_file", str(tmp_path / "cli.json")],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert json.loads((tmp_path / "cli.json").read_text())[key] == pytest.approx(best[key], abs=1e-9)


def test_labels_are_matched_by_id():
    # AUs: those in common, in the split's order.
    assert align_labels(["AU1", "AU2", "AU4", "AU12"], ["AU12", "AU26", "AU1"], "au") == ([3, 0], [0, 2])
    with pytest.raises(ValueError, match="none in common"):
        align_labels(["AU1"], ["AU2"], "au")
    # Expressions: every class of the split, which the model must know.
    model = ["neutral", "happiness", "sadness", "contempt"]
    assert align_labels(model, ["happiness", "neutral"], "expression") == ([1, 0], [0, 1])
    with pytest.raises(ValueError, match=r"\['anger'\]"):
        align_labels(model, ["anger", "neutral"], "expression")


def test_evaluation_needs_a_fine_tuned_model():
    with pytest.raises(ValueError, match="model_name_or_path is required"):
        EvaluationArguments()

"""`make demo` runs end to end: the script it calls (here in its `--quick` form: a tiny synthfaces set and a few steps)
runs stage 0, stage 1 and every stage-2 row, fits the classical references, and leaves loadable models and consistent
results. It runs on one thread (`--threads 1`) so that it does not compete with itself when the suite shares the
cores, and its time limit is the subprocess's, not pytest's default."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sklearn.metrics import f1_score
from transformers import pipeline

from clef_hf import CLEFModel, CLEFProcessor
from dataset_builders import au_ids_of, build_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_quick_demo_saves_loadable_models_and_the_results_the_readme_quotes(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--output_dir", str(tmp_path), "--quick", "--threads", "1"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test subjects of synthfaces" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["table"]["au"]["rows"]
    assert len(rows) == 3 + 9 and "logistic regression on HOG" in rows and "CLEF stage 0 + 1 -> stage 2 (IND)" in rows
    assert set(results["table"]["expression"]["rows"]) == set(rows)
    # Stage 0 trains at its own rate (MainJobOptions.stage0_learning_rate), stage 1 at the recipe's.
    stage0_args = json.loads((tmp_path / "stage0" / "model" / "training_args.json").read_text())
    stage1_args = json.loads((tmp_path / "stage1" / "model" / "training_args.json").read_text())
    assert (stage0_args["pretraining_losses"], stage0_args["learning_rate"]) == ("image_text", 5e-4)
    assert stage1_args["learning_rate"] == 1e-3 and stage1_args["pretraining_losses"] != "image_text"
    # Boolean options keep their defaults from the command line: test-time mirroring is chosen on validation for
    # every row, CLEF (saved in the model's config) and classical.
    assert results["options"]["test_time_flip"] is True and results["options"]["quick"] is True
    saved_au = json.loads((tmp_path / "au-model" / "config.json").read_text())
    au_run = json.loads((tmp_path / "runs" / "au-stage0_1-IND" / "all_results.json").read_text())
    assert saved_au["test_time_flip"] is au_run["test_time_flip"] and isinstance(au_run["test_time_flip"], bool)
    assert all(isinstance(row["test_time_flip"], bool) for row in results["references"]["au"]["rows"].values())
    for key in ("au.mean_f1", "au.baseline_all_positive_f1", "expression.accuracy",
                "expression.baseline_majority_accuracy"):
        value = results
        for part in key.split("."):
            value = value[part]
        assert 0.0 <= value <= 1.0, key

    # The baselines are what a direct computation on the held-out split gives.
    quick = {"num_subjects": 6, "num_validation_subjects": 1, "num_test_subjects": 2, "frames_per_activity": 3,
             "seed": 0}
    splits = build_dataset("synthfaces", cache_dir=str(tmp_path / "data"), **quick)  # the demo's cached data
    train_expression = torch.tensor(list(splits["train"]["expression"]))
    test_expression = torch.tensor(list(splits["test"]["expression"]))
    majority = torch.bincount(train_expression).argmax()
    expected = (test_expression == majority).double().mean().item()
    assert abs(results["expression"]["baseline_majority_accuracy"] - expected) < 1e-9
    truth = torch.tensor(list(splits["test"]["au"]))
    all_positive_f1 = (2 * truth.sum(0) / (len(truth) + truth.sum(0))).mean().item()
    assert abs(results["au"]["baseline_all_positive_f1"] - all_positive_f1) < 1e-6

    # AU intensity: one --au_intensity model next to the trivial predictor (each AU's training mean, ICC 0).
    intensity = results["intensity"]
    assert "AU intensity (0-5)" in result.stdout and "trivial (training mean per AU)" in result.stdout
    assert intensity["start"] == "stage 0 + 1" and abs(intensity["trivial"]["icc"]) < 1e-9
    train_intensity = torch.tensor(list(splits["train"]["au_intensity"]))
    test_intensity = torch.tensor(list(splits["test"]["au_intensity"]))
    trivial_mae = (test_intensity - train_intensity.mean(0)).abs().mean().item()
    assert abs(intensity["trivial"]["mae"] - trivial_mae) < 1e-5
    for key in ("icc", "mae", "pearson"):
        assert isinstance(intensity["test"][key], float), key
    intensity_model = CLEFModel.from_pretrained(intensity["model_dir"])
    assert intensity_model.config.au_intensity and intensity_model.intensity_embeddings.shape[:2] == (17, 6)

    for task, num_labels in (("au", 17), ("expression", 8)):
        model = CLEFModel.from_pretrained(tmp_path / f"{task}-model")
        processor = CLEFProcessor.from_pretrained(tmp_path / f"{task}-model")
        assert model.config.task == task and len(model.config.label_ids) == num_labels
        assert torch.allclose(model.label_embeddings.norm(dim=-1), torch.ones(num_labels), atol=1e-5)
        processor.check_fits(model.config.text_config)
        image = splits["test"][0]["image"]
        with torch.no_grad():
            logits = model(**processor(images=image, return_tensors="pt")).logits
        assert logits.shape == (1, num_labels)

    # The saved models, loaded by name through the pipeline (the user's path), score what results.json reports.
    images = [image.convert("RGB") for image in splits["test"]["image"]]
    expression_faces = pipeline("facial-behavior", model=str(tmp_path / "expression-model"))(images, detect_faces=False)
    names = splits["test"].features["expression"].names
    predicted = [faces[0]["predictions"][0]["label"] for faces in expression_faces]
    accuracy = sum(p == names[y] for p, y in zip(predicted, splits["test"]["expression"])) / len(images)
    assert abs(accuracy - results["expression"]["accuracy"]) < 1e-9
    au_faces = pipeline("facial-behavior", model=str(tmp_path / "au-model"))(images, detect_faces=False)
    au_ids = list(au_ids_of(splits["test"]))
    present = [[{entry["label"]: entry["present"] for entry in faces[0]["predictions"]}[au] for au in au_ids]
               for faces in au_faces]
    per_au = f1_score(truth.numpy(), present, average=None, zero_division=0)
    assert abs(per_au.mean() - results["au"]["mean_f1"]) < 1e-6


@pytest.mark.timeout(900)
def test_the_figures_do_not_depend_on_how_many_workers_run_the_jobs(tmp_path):
    # Every stage and row is seeded and runs on one torch thread, in its own worker or in this process: two workers
    # must give the figures one process gives, to the last digit.
    tables = {}
    for workers in (1, 2):
        output_dir = tmp_path / f"workers-{workers}"
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "demo.py"), "--output_dir", str(output_dir), "--quick",
             "--threads", "1", "--workers", str(workers)],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        results = json.loads((output_dir / "results.json").read_text())
        tables[workers] = (results["table"], results["stage1"]["last_losses"], results["intensity"]["test"])
    assert tables[1] == tables[2]


def test_job_executor_rejects_nonsense_and_hands_errors_to_the_caller():
    from clef_hf.training.main_job import job_executor

    with pytest.raises(ValueError, match="workers and worker_threads must be >= 1"):
        job_executor(0, 1)
    with job_executor(1, 1) as executor:
        assert executor.submit(sum, [1, 2]).result() == 3
        with pytest.raises(ZeroDivisionError):
            executor.submit(divmod, 1, 0).result()

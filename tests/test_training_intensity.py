"""Fine-tuning with AU intensity phrases (`--au_intensity`, Eq. I): a real 2-step run of a tiny CLEF model on
synthfaces writes a checkpoint whose pipeline AU entries carry "intensity" (0-5) while a model without it has none,
the evaluation reports the au_intensity metrics next to the trivial predictor, and bad inputs are named."""

import datasets
import pytest
import torch
from transformers import pipeline

import clef_hf  # noqa: F401  (registers the facial-behavior task)
from clef_hf import CLEFModel
from clef_hf.training import FineTuningArguments, finetune
from clef_hf.training.evaluation import intensity_baseline_metrics

pytestmark = pytest.mark.usefixtures("fresh_accelerator_state", "one_torch_thread")


def intensity_args(output_dir, dataset, config_file, **overrides) -> FineTuningArguments:
    values = dict(output_dir=str(output_dir), dataset=dataset, config_file=config_file, task="au",
                  per_device_train_batch_size=16, per_device_eval_batch_size=32, max_steps=2, learning_rate=1e-3,
                  report_to="none", seed=3, eval_split="test", test_split="", select_au_threshold=False,
                  au_intensity=True)
    values.update(overrides)
    return FineTuningArguments(**values)


def test_two_steps_with_au_intensity_give_a_checkpoint_whose_au_entries_carry_intensity(tmp_path, tiny_faces,
                                                                                          tiny_config_file):
    results = finetune(intensity_args(tmp_path / "run", tiny_faces, tiny_config_file))
    assert results["au_intensity"] is True and results["global_step"] == 2
    best = results["best"]
    assert results["best_metric"] == best["intensity_mean_icc"]  # the epoch is chosen on the mean ICC
    for key in ("intensity_mean_icc", "intensity_mean_mae", "intensity_mean_pearson"):
        assert isinstance(best[key], float)
    assert set(best["intensity_per_label_icc"]) == set(CLEFModel.from_pretrained(results["best_model_dir"])
                                                       .config.label_ids)

    model = CLEFModel.from_pretrained(results["best_model_dir"])
    assert model.config.au_intensity and model.intensity_embeddings.shape[:2] == (17, 6)
    detector = pipeline("facial-behavior", model=results["best_model_dir"])
    test = datasets.load_from_disk(tiny_faces)["test"]
    faces = detector([test[0]["image"], test[1]["image"]], detect_faces=False)
    for face in faces:
        predictions = face[0]["predictions"]
        assert len(predictions) == 17
        for prediction in predictions:
            assert set(prediction) == {"label", "name", "score", "present", "intensity"}
            assert isinstance(prediction["intensity"], float) and 0.0 <= prediction["intensity"] <= 5.0
    # The pipeline's intensities are the model's (Eq. I's expected level), face by face.
    processor_pixels = detector.image_processor(images=test[0]["image"].convert("RGB"),
                                                return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.eval()(pixel_values=processor_pixels).intensity[0]
    torch.testing.assert_close(torch.tensor([p["intensity"] for p in faces[0][0]["predictions"]]), expected,
                               atol=1e-5, rtol=1e-5)

    # Zero-shot candidates have no intensity phrases: no "intensity" key.
    zero_shot = detector(test[0]["image"], detect_faces=False, candidate_labels=["lip corner puller", "dimpler"])
    assert all("intensity" not in prediction for prediction in zero_shot[0]["predictions"])

    # The trivial predictor gives each AU's training mean: ICC 0 by construction.
    baseline = results["intensity_baseline"]
    assert baseline["intensity_mean_icc"] == pytest.approx(0.0, abs=1e-9)
    train = torch.tensor(datasets.load_from_disk(tiny_faces)["train"]["au_intensity"])
    truth = torch.tensor(test["au_intensity"])
    mae = (truth - train.mean(0)).abs().mean().item()
    assert baseline["intensity_mean_mae"] == pytest.approx(mae, rel=1e-5)


def test_a_model_without_intensity_has_no_intensity_key(tmp_path, tiny_faces, tiny_config_file):
    results = finetune(intensity_args(tmp_path / "run", tiny_faces, tiny_config_file, au_intensity=False))
    assert "au_intensity" not in results and "intensity_mean_icc" not in results["best"]
    detector = pipeline("facial-behavior", model=results["best_model_dir"])
    image = datasets.load_from_disk(tiny_faces)["test"][0]["image"]
    predictions = detector(image, detect_faces=False)[0]["predictions"]
    assert predictions and all("intensity" not in prediction for prediction in predictions)


def test_a_split_without_the_intensity_column_is_named(tmp_path, tiny_faces, tiny_config_file):
    splits = datasets.load_from_disk(tiny_faces)
    splits["test"] = splits["test"].remove_columns("au_intensity")
    splits.save_to_disk(str(tmp_path / "no-intensity"))
    with pytest.raises(ValueError, match=r"--au_intensity needs an 'au_intensity' column .* the 'test' split"):
        finetune(intensity_args(tmp_path / "run", str(tmp_path / "no-intensity"), tiny_config_file))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"components": "I"}, "--components IN or IND"),
        ({"components": "ID"}, "--components IN or IND"),
        ({"task": "expression"}, "--task au"),
        ({"objective": "cl_ile"}, "--objective clef"),
        ({"intensity_loss_weight": -1.0}, "--intensity_loss_weight must be >= 0"),
    ],
)
def test_au_intensity_options_that_cannot_work_are_refused(tmp_path, tiny_config_file, overrides, message):
    with pytest.raises(ValueError, match=message):
        intensity_args(tmp_path, "synthfaces", tiny_config_file, **overrides)


def test_intensity_baseline_ignores_unknown_intensities():
    train = datasets.Dataset.from_dict({"au_intensity": [[1.0, -1.0], [3.0, 4.0], [-1.0, 2.0]]})
    held_out = datasets.Dataset.from_dict({"au_intensity": [[0.0, 3.0], [4.0, -1.0], [2.0, 5.0]]})
    baseline = intensity_baseline_metrics(train, held_out, ["AU6", "AU12"])
    assert baseline["intensity_training_means"] == {"AU6": 2.0, "AU12": 3.0}
    assert baseline["intensity_per_label_mae"] == pytest.approx({"AU6": (2 + 2 + 0) / 3, "AU12": (0 + 2) / 2})


def test_a_saved_intensity_model_reproduces_its_intensity_metrics(tmp_path, tiny_faces, tiny_config_file):
    from accelerate.state import AcceleratorState

    from clef_hf.training import EvaluationArguments, evaluate_checkpoint

    results = finetune(intensity_args(tmp_path / "run", tiny_faces, tiny_config_file))
    AcceleratorState._reset_state(True)
    evaluated = evaluate_checkpoint(EvaluationArguments(model_name_or_path=results["best_model_dir"],
                                                        dataset=tiny_faces, per_device_eval_batch_size=7))
    for key in ("intensity_mean_icc", "intensity_mean_mae", "intensity_mean_pearson", "mean_f1"):
        assert evaluated[key] == pytest.approx(results["validation"][key], abs=1e-6), key

"""Test-time mirroring (`CLEFConfig.test_time_flip`): the embedding inference uses, the choice fine-tuning makes on
the validation split, the pipeline that honours it, and the same choice for the classical references."""

import datasets
import numpy as np
import pytest
import torch
from skimage.data import lfw_subset
from torch import nn
from transformers import pipeline

from clef_hf import CLEFModel, CLEFProcessor
from clef_hf.training.evaluation import LabelScores, label_scores, metrics_from_scores, select_au_threshold
from clef_hf.training.references import classical_references, predict_task

from test_model_selection import run, three_splits  # noqa: F401  (the module's fixture)

pytestmark = pytest.mark.usefixtures("fresh_accelerator_state", "one_torch_thread")


def _mean_of_both_views(model: CLEFModel, pixel_values: torch.Tensor) -> torch.Tensor:
    one = nn.functional.normalize(model.get_image_features(pixel_values), dim=-1)
    mirrored = nn.functional.normalize(model.get_image_features(torch.flip(pixel_values, dims=[3])), dim=-1)
    return nn.functional.normalize(one + mirrored, dim=-1)


def test_image_embeddings_average_the_mirror_image_when_asked(au_model, pixel_values):
    with torch.no_grad():
        plain = au_model.get_image_embeddings(pixel_values)
        flipped = au_model.get_image_embeddings(pixel_values, test_time_flip=True)
        assert torch.allclose(plain, nn.functional.normalize(au_model.get_image_features(pixel_values), dim=-1))
        assert torch.allclose(flipped, _mean_of_both_views(au_model, pixel_values), atol=1e-6)
        assert not torch.allclose(plain, flipped, atol=1e-3)  # random images are not mirror-symmetric
        assert torch.allclose(flipped.norm(dim=-1), torch.ones(len(pixel_values)))
        # An image and its mirror image get the same embedding, and a mirror-symmetric image its own.
        mirrored = au_model.get_image_embeddings(torch.flip(pixel_values, dims=[3]), test_time_flip=True)
        assert torch.allclose(flipped, mirrored, atol=1e-5)
        symmetric = (pixel_values + torch.flip(pixel_values, dims=[3])) / 2
        assert torch.allclose(au_model.get_image_embeddings(symmetric, test_time_flip=True),
                              au_model.get_image_embeddings(symmetric), atol=1e-5)
        au_model.config.test_time_flip = True  # the default follows the config
        assert torch.equal(au_model.get_image_embeddings(pixel_values), flipped)


def test_the_pipeline_mirrors_when_the_config_says_so(tmp_path, au_model, tokenizer):
    """With `test_time_flip`, a face and its mirror image get the same scores (each is the mean of both views);
    without, they differ."""
    au_model.save_pretrained(tmp_path)
    CLEFProcessor.from_tokenizer(tokenizer, image_size=au_model.config.vision_config.image_size).save_pretrained(
        tmp_path)
    faces = list(lfw_subset()[:4])
    mirrored = [np.ascontiguousarray(face[:, ::-1]) for face in faces]
    pipe = pipeline("facial-behavior", model=str(tmp_path))

    def scores(images) -> np.ndarray:
        return np.array([[p["score"] for p in sorted(result[0]["predictions"], key=lambda p: p["label"])]
                         for result in pipe(images, detect_faces=False)])

    assert pipe.model.config.test_time_flip is False
    plain = scores(faces)
    assert not np.allclose(plain, scores(mirrored), atol=1e-4)
    pipe.model.config.test_time_flip = True
    flipped = scores(faces)
    np.testing.assert_allclose(flipped, scores(mirrored), atol=1e-5)
    assert not np.allclose(plain, flipped, atol=1e-4)
    saved = CLEFModel.from_pretrained(tmp_path)
    saved.config.test_time_flip = True
    saved.save_pretrained(tmp_path / "flipping")
    CLEFProcessor.from_pretrained(tmp_path).save_pretrained(tmp_path / "flipping")
    pipe = pipeline("facial-behavior", model=str(tmp_path / "flipping"))  # read from the checkpoint's config
    np.testing.assert_allclose(scores(faces), flipped, atol=1e-6)


def test_fine_tuning_keeps_the_better_way_on_validation_and_saves_it(tmp_path, three_splits, tiny_config_file):
    results = run(tmp_path, three_splits, tiny_config_file, select_test_time_flip=True)
    best_dir = tmp_path / "best"
    model = CLEFModel.from_pretrained(best_dir).eval()
    assert model.config.test_time_flip is results["test_time_flip"]
    # Score the validation split both ways with the saved model: the kept way is the better (ties: single pass).
    splits = datasets.load_from_disk(three_splits)
    processor = CLEFProcessor.from_pretrained(best_dir)
    pixels = processor(images=[image.convert("RGB") for image in splits["validation"]["image"]],
                       return_tensors="pt")["pixel_values"]
    truth = torch.tensor(splits["validation"]["au"])
    by_way = {}
    with torch.no_grad():
        for flip in (False, True):
            logits = model.get_image_embeddings(pixels, flip) @ model._stored_label_embeddings().T / model.temperature
            scores = LabelScores(torch.sigmoid(logits), truth, list(model.config.label_ids), None, None)
            by_way[flip] = select_au_threshold(scores)[1]["mean_f1"]
    assert results["validation"]["mean_f1"] == pytest.approx(max(by_way.values()), abs=1e-6)
    assert results["test_time_flip"] is (by_way[True] > by_way[False])
    # Off (the default), the saved model does not mirror.
    plain = run(tmp_path / "plain", three_splits, tiny_config_file)
    assert plain["test_time_flip"] is False
    assert CLEFModel.from_pretrained(tmp_path / "plain" / "best").config.test_time_flip is False
    assert plain["validation"]["mean_f1"] == pytest.approx(by_way[False], abs=1e-6)


def test_label_scores_pass_the_choice_through(au_model, pixel_values):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    batches = [{"pixel_values": pixel_values, "au": torch.zeros(len(pixel_values), 5, dtype=torch.long)}]
    embeds = au_model._stored_label_embeddings()
    plain = label_scores(accelerator, au_model, batches, "au", embeds, test_time_flip=False).scores
    flipped = label_scores(accelerator, au_model, batches, "au", embeds, test_time_flip=True).scores
    with torch.no_grad():
        expected = torch.sigmoid(_mean_of_both_views(au_model, pixel_values) @ embeds.T / au_model.temperature)
    assert torch.allclose(flipped, expected, atol=1e-6) and not torch.allclose(plain, flipped, atol=1e-4)
    assert metrics_from_scores(LabelScores(flipped, batches[0]["au"], list(au_model.config.label_ids), None, None),
                               "au")["mean_f1"] == 0.0


def test_references_mirror_by_the_mean_decision_and_choose_it_on_validation(three_splits):
    splits = datasets.load_from_disk(three_splits)
    label_ids = splits["train"].features["expression"].names
    plain = classical_references(splits["train"], splits["validation"], splits["test"], "expression", label_ids)
    chosen = classical_references(splits["train"], splits["validation"], splits["test"], "expression", label_ids,
                                  select_test_time_flip=True)
    for name, row in chosen["rows"].items():
        assert isinstance(row["test_time_flip"], bool) and plain["rows"][name]["test_time_flip"] is False
        assert row["validation"]["accuracy"] >= plain["rows"][name]["validation"]["accuracy"]
        assert row["validation_by_C"] == plain["rows"][name]["validation_by_C"]  # the single pass, as before
        if not row["test_time_flip"] and row["C"] == plain["rows"][name]["C"]:
            assert row["test"] == plain["rows"][name]["test"]


def test_predict_task_with_the_same_features_mirrored_changes_nothing():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(60, 5)), rng.integers(0, 3, 60)
    classifier = LogisticRegression(max_iter=200).fit(features, labels)
    np.testing.assert_array_equal(predict_task([classifier], features, "expression", mirrored=features),
                                  classifier.predict(features))
    binary = [LogisticRegression(max_iter=200).fit(features, labels == k) for k in range(3)]
    np.testing.assert_array_equal(predict_task(binary, features, "au", mirrored=features),
                                  predict_task(binary, features, "au"))
    # The mean decision of two different views is neither view's prediction alone in general.
    other = rng.normal(size=(60, 5))
    mean = predict_task([classifier], features, "expression", mirrored=other)
    decision = (classifier.decision_function(features) + classifier.decision_function(other)) / 2
    np.testing.assert_array_equal(mean, classifier.classes_[decision.argmax(1)])

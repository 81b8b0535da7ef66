"""Stage 0, `--pretraining_losses image_text`: a tiny CLEF model learns CLIP's image-caption loss on the synthetic
faces' captions or on an image folder with a metadata.jsonl, and the model it saves is where stage 1 and fine-tuning
start."""

import json
import math
import os

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from clef_hf import CLEFModel
from clef_hf.training import FineTuningArguments, PretrainingArguments, finetune, pretrain
from clef_hf.training.data import load_splits
from clef_hf.training.initialization import load_model_and_processor
from dataset_builders.synthfaces.captions import caption_of, caption_rng
from dataset_builders.synthfaces.generator import ACTIVITIES, render_frame, sample_frame, sample_identity

from conftest import IMAGE_SIZE, PROJECTION_DIM

pytestmark = pytest.mark.usefixtures("fresh_accelerator_state", "one_torch_thread")


def reset_accelerate() -> None:
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def stage_zero_args(output_dir, dataset, config_file=None, **overrides) -> PretrainingArguments:
    values = dict(output_dir=str(output_dir), dataset=dataset, config_file=config_file,
                  pretraining_losses="image_text", per_device_train_batch_size=16, max_steps=3, learning_rate=1e-3,
                  report_to="none", logging_steps=1, seed=2)
    values.update(overrides)
    return PretrainingArguments(**values)


def weights(directory) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(directory, "model.safetensors"))


def test_stage_zero_trains_both_towers_and_the_temperature_then_stage_one_and_finetuning_start_from_it(
        tmp_path, tiny_faces, tiny_config_file):
    result = pretrain(stage_zero_args(tmp_path / "stage0", tiny_faces, tiny_config_file))
    assert result["global_step"] == 3 and math.isfinite(result["train_loss"])
    stage0 = weights(result["model_dir"])
    torch.manual_seed(2)  # the run's seed: its initial weights
    initial = load_model_and_processor(config_file=tiny_config_file)[0].state_dict()
    for name in ("text_projection.weight", "visual_projection.weight", "text_model.embeddings.token_embedding.weight"):
        assert not torch.equal(stage0[name], initial[name]), f"{name} did not learn"
    # Unlike stage 1's fixed ε, stage 0 learns CLIP's temperature.
    assert stage0["logit_scale"].item() != pytest.approx(math.log(1 / 0.07))
    log = [json.loads(line) for line in (tmp_path / "stage0" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in log if "train/loss" in line] == [1, 2, 3]

    reset_accelerate()  # stage 1 from stage 0's model
    stage1 = pretrain(PretrainingArguments(
        output_dir=str(tmp_path / "stage1"), dataset=tiny_faces, model_name_or_path=result["model_dir"],
        per_device_train_batch_size=16, max_steps=1, report_to="none", seed=2,
    ))
    assert stage1["global_step"] == 1
    assert weights(stage1["model_dir"])["logit_scale"].item() == pytest.approx(stage0["logit_scale"].item())

    reset_accelerate()  # fine-tuning from stage 0's model
    tuned = finetune(FineTuningArguments(
        output_dir=str(tmp_path / "ft"), dataset=tiny_faces, model_name_or_path=result["model_dir"], task="au",
        per_device_train_batch_size=16, per_device_eval_batch_size=32, max_steps=2, learning_rate=1e-3,
        report_to="none", seed=3, eval_split="test", test_split="",  # tiny_faces has train and test splits only
    ))
    model = CLEFModel.from_pretrained(tuned["best_model_dir"])
    assert model.config.task == "au" and model.label_embeddings.shape == (17, PROJECTION_DIM)
    before = stage0["vision_model.embeddings.patch_embedding.weight"]
    assert (model.vision_model.embeddings.patch_embedding.weight - before).abs().max() < 0.05  # not a fresh init


def test_stage_zero_names_the_split_and_column_of_missing_captions(tmp_path, tiny_faces, tiny_config_file):
    splits = datasets.load_from_disk(tiny_faces)
    blank = str(tmp_path / "blank")
    splits.map(lambda row, index: {"caption": "  " if index in (3, 7) else row["caption"]},
               with_indices=True).save_to_disk(blank)
    with pytest.raises(ValueError, match=r"'train' split has 2 of 64 rows without a caption in column 'caption'"):
        pretrain(stage_zero_args(tmp_path / "run", blank, tiny_config_file))
    reset_accelerate()
    uncaptioned = str(tmp_path / "uncaptioned")
    splits.remove_columns("caption").save_to_disk(uncaptioned)
    with pytest.raises(ValueError, match=r"'train' split has no column \['caption'\]"):
        pretrain(stage_zero_args(tmp_path / "run2", uncaptioned, tiny_config_file))
    with pytest.raises(ValueError, match="learns its temperature"):
        stage_zero_args(tmp_path / "run3", tiny_faces, tiny_config_file, temperature=0.25)


def write_image_folder(folder, count: int = 8, caption_field: str = "caption") -> list[str]:
    """`count` synthetic faces as PNG files with a metadata.jsonl of `file_name` and caption, imagefolder's layout."""
    folder.mkdir(parents=True)
    captions = []
    with open(folder / "metadata.jsonl", "w") as metadata:
        for index in range(count):
            subject, activity = 500 + index // 4, ACTIVITIES[index % len(ACTIVITIES)]
            identity = sample_identity(0, subject)
            frame = sample_frame(0, identity, activity, index)
            render_frame(identity, frame, IMAGE_SIZE).save(folder / f"face_{index:02d}.png")
            captions.append(caption_of(identity, frame, caption_rng(0, subject, activity, index)))
            metadata.write(json.dumps({"file_name": f"face_{index:02d}.png", caption_field: captions[-1]}) + "\n")
    return captions


def test_stage_zero_on_an_image_folder_with_metadata(tmp_path, tiny_config_file):
    folder = tmp_path / "my-faces"
    captions = write_image_folder(folder, caption_field="text")
    args = stage_zero_args(tmp_path / "run", str(folder), tiny_config_file, caption_column="text",
                           cache_dir=str(tmp_path / "cache"), per_device_train_batch_size=4, max_steps=2)
    splits = load_splits(args)
    assert list(splits) == ["train"] and splits["train"].column_names == ["image", "text"]
    assert sorted(splits["train"]["text"]) == sorted(captions)
    image = splits["train"][0]["image"]
    assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
    assert np.asarray(image.convert("RGB")).std() > 10  # a real face image, decoded from the PNG
    result = pretrain(args)
    assert result["global_step"] == 2 and math.isfinite(result["train_loss"])
    assert CLEFModel.from_pretrained(result["model_dir"]).config.task is None


def test_a_folder_that_is_neither_saved_nor_an_image_folder_is_named(tmp_path, tiny_config_file):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="metadata.jsonl"):
        load_splits(stage_zero_args(tmp_path / "run", str(tmp_path / "empty"), tiny_config_file))

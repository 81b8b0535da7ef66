"""`--cache_pixel_values`: each split goes through the image processor once (`with_pixel_values`), and training on
the cached pixels is the same training as on the images, to the last bit."""

import copy
import os

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clef_hf import CLEFProcessor
from clef_hf.training import FineTuningArguments, PretrainingArguments, finetune, pretrain
from clef_hf.training.data import FacialBehaviorCollator, ImageCaptionCollator, with_pixel_values
from clef_hf.training.initialization import load_model_and_processor

pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.fixture(scope="module")
def processor(tiny_config_file) -> CLEFProcessor:
    return load_model_and_processor(None, tiny_config_file, task=None)[1]


def test_cached_pixels_are_what_the_collators_compute_from_the_images(tiny_faces, processor):
    split = datasets.load_from_disk(tiny_faces)["train"]
    cached = with_pixel_values(split, processor.image_processor)
    assert "image" not in cached.column_names and len(cached) == len(split)
    assert cached.features["pixel_values"].shape == (3, 32, 32)
    rows = [split[i] for i in range(5)]
    cached_rows = [cached[i] for i in range(5)]
    assert isinstance(cached_rows[0]["pixel_values"], np.ndarray) and cached_rows[0]["au"] == rows[0]["au"]

    collator = FacialBehaviorCollator(processor.image_processor, ("au", "expression"))
    from_images, from_cache = collator(rows), collator(cached_rows)
    assert from_images.keys() == from_cache.keys()
    for key in from_images:
        assert torch.equal(from_images[key], from_cache[key]), key
    captions = ImageCaptionCollator(processor.image_processor, processor.tokenizer)
    assert torch.equal(captions(rows)["pixel_values"], captions(cached_rows)["pixel_values"])
    assert torch.equal(captions(rows)["input_ids"], captions(cached_rows)["input_ids"])


def test_the_processed_split_is_cached_and_reused(tiny_faces, processor):
    split = datasets.load_from_disk(tiny_faces)["test"]
    first, second = (with_pixel_values(split, processor.image_processor) for _ in range(2))
    assert first.cache_files and first.cache_files == second.cache_files
    # another processor (another size) is another cache entry
    other = copy.deepcopy(processor.image_processor)
    other.size, other.crop_size = {"shortest_edge": 16}, {"height": 16, "width": 16}
    resized = with_pixel_values(split, other)
    assert resized.cache_files != first.cache_files and resized.features["pixel_values"].shape == (3, 16, 16)


def test_bad_splits_are_named(tiny_faces, processor):
    split = datasets.load_from_disk(tiny_faces)["test"]
    with pytest.raises(ValueError, match="no image column 'photo'"):
        with_pixel_values(split, processor.image_processor, image_column="photo")
    with pytest.raises(ValueError, match="empty"):
        with_pixel_values(split.select([]), processor.image_processor)


def _common(output_dir, tiny_faces, tiny_config_file, cache: bool) -> dict:
    return dict(output_dir=str(output_dir), dataset=tiny_faces, config_file=tiny_config_file,
                per_device_train_batch_size=16, learning_rate=1e-3, report_to="none", logging_steps=1, seed=3,
                num_train_epochs=2, cache_pixel_values=cache, color_jitter=0.25)


def test_fine_tuning_on_cached_pixels_gives_the_same_weights(tmp_path, tiny_faces, tiny_config_file):
    from accelerate.state import AcceleratorState, GradientState

    results = {}
    for cache in (False, True):
        results[cache] = finetune(FineTuningArguments(
            **_common(tmp_path / str(cache), tiny_faces, tiny_config_file, cache), task="au", components="IND",
            per_device_eval_batch_size=32, eval_split="test", test_split="", select_au_threshold=False))
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    assert results[True]["validation"] == results[False]["validation"]
    plain, cached = (load_file(os.path.join(tmp_path, str(cache), "best", "model.safetensors")) for cache in (False, True))
    assert plain.keys() == cached.keys()
    for name in plain:
        assert torch.equal(plain[name], cached[name]), name


def test_stage0_on_cached_pixels_gives_the_same_weights(tmp_path, tiny_faces, tiny_config_file):
    from accelerate.state import AcceleratorState, GradientState

    for cache in (False, True):
        pretrain(PretrainingArguments(**_common(tmp_path / str(cache), tiny_faces, tiny_config_file, cache),
                                      pretraining_losses="image_text"))
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    plain, cached = (load_file(os.path.join(tmp_path, str(cache), "model", "model.safetensors")) for cache in (False, True))
    for name in plain:
        assert torch.equal(plain[name], cached[name]), name

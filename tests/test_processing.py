"""CLEFProcessor and the offline BPE tokenizer: real tokenization, save/load, and mismatched tokenizers."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, CLIPImageProcessorPil, CLIPTokenizer

from clef_hf import CLEFProcessor, TokenizerMismatchError, check_tokenizer_fits, train_clip_tokenizer
from clef_hf.bpe_tokenizer import EOS_TOKEN
from clef_hf.image_inputs import as_pil_image_processor


def test_trained_tokenizer_is_a_real_clip_bpe(tokenizer):
    assert isinstance(tokenizer, CLIPTokenizer)
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.eos_token_id == len(tokenizer) - 1
    encoded = tokenizer("A photo of a person with LIP corner puller.")["input_ids"]
    assert encoded[0] == tokenizer.bos_token_id and encoded[-1] == tokenizer.eos_token_id
    # BPE merged the frequent words into single tokens ...
    assert {"photo</w>", "person</w>", "lip</w>"} <= set(tokenizer.convert_ids_to_tokens(encoded))
    assert tokenizer.decode(encoded, skip_special_tokens=True) == "a photo of a person with lip corner puller ."
    # ... and unseen text falls back to byte symbols, never the unknown token.
    unseen = tokenizer("Zebra ß 42 ☺", add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in unseen


def test_tokenizer_training_is_deterministic():
    # tokenizers' trainer breaks ties by symbol id; without fixed ids this differed between calls and processes.
    first, second = train_clip_tokenizer(vocab_size=400), train_clip_tokenizer(vocab_size=400)
    assert first.get_vocab() == second.get_vocab()
    script = "import json; from clef_hf import train_clip_tokenizer; print(json.dumps(train_clip_tokenizer(vocab_size=400).get_vocab()))"
    other_process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(other_process.stdout.strip().splitlines()[-1]) == first.get_vocab()


def test_processor_round_trip(processor, tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8))
    inputs = processor(images=[image], text=["a photo of a person with dimpler."], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    processor.save_pretrained(tmp_path)
    for loader in (CLEFProcessor.from_pretrained, AutoProcessor.from_pretrained):
        loaded = loader(tmp_path)
        assert type(loaded) is CLEFProcessor
        again = loaded(images=[image], text=["a photo of a person with dimpler."], return_tensors="pt")
        torch.testing.assert_close(again["pixel_values"], inputs["pixel_values"])
        assert again["input_ids"].tolist() == inputs["input_ids"].tolist()


def test_loaded_processors_keep_the_pillow_backend(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    assert type(CLEFProcessor.from_pretrained(tmp_path).image_processor) is CLIPImageProcessorPil
    assert as_pil_image_processor(processor.image_processor) is processor.image_processor
    assert as_pil_image_processor(None) is None


def test_a_torchvision_clip_image_processor_is_rebuilt_on_pillow(processor, tmp_path):
    """transformers loads a saved CLIPImageProcessorPil with torchvision when it is installed; its resizing differs,
    so CLEF rebuilds it on Pillow (seen on a GPU machine with torchvision: 0.4% of the pixels off by up to 0.015)."""
    pytest.importorskip("torchvision")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 40, 3), dtype=np.uint8))
    processor.save_pretrained(tmp_path)
    torchvision_processor = AutoImageProcessor.from_pretrained(tmp_path, backend="torchvision")
    assert type(torchvision_processor).__name__ == "CLIPImageProcessor"
    rebuilt = as_pil_image_processor(torchvision_processor)
    assert type(rebuilt) is CLIPImageProcessorPil
    expected = processor.image_processor(image, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(rebuilt(image, return_tensors="pt")["pixel_values"], expected)
    assert not torch.allclose(torchvision_processor(image, return_tensors="pt")["pixel_values"], expected, atol=1e-5)


def test_default_processor_is_224_px(tokenizer):
    processor = CLEFProcessor.from_tokenizer(tokenizer)
    pixels = processor(images=Image.new("RGB", (300, 260)), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)


def test_offline_broken_tokenizer_is_detected(tmp_path):
    # Exactly what transformers returns offline with an empty cache: no error, a 2-token vocabulary.
    broken = CLIPTokenizer.from_pretrained("openai/clip-vit-base-patch32", cache_dir=tmp_path / "empty-cache")
    assert len(broken) <= 3
    with pytest.raises(TokenizerMismatchError, match="unknown token"):
        check_tokenizer_fits(broken)
    # A processor saved with it fails to load with the same message rather than producing garbage later.
    CLEFProcessor.from_tokenizer(broken, image_size=32).save_pretrained(tmp_path / "saved")
    with pytest.raises(TokenizerMismatchError, match="not a real CLIP tokenizer"):
        CLEFProcessor.from_pretrained(tmp_path / "saved")


def test_tokenizer_that_does_not_fit_the_model_is_reported(tokenizer, make_config):
    config = make_config("au")
    check_tokenizer_fits(tokenizer, config.text_config)
    other = train_clip_tokenizer(vocab_size=300)
    with pytest.raises(TokenizerMismatchError, match=r"vocabulary of \d+ tokens but .*vocab_size"):
        check_tokenizer_fits(other, config.text_config)
    config.text_config.eos_token_id = 3
    with pytest.raises(TokenizerMismatchError, match="eos_token_id=3"):
        CLEFProcessor.from_tokenizer(tokenizer, 32).check_fits(config.text_config)


def test_users_clip_directory_in_the_openai_layout_loads(tokenizer, tiny_clip, tmp_path):
    """A CLIP checkpoint directory as the openai/clip-vit-* repos ship it: vocab.json + merges.txt, no tokenizer.json."""
    from transformers import CLIPImageProcessorPil

    from clef_hf import CLEFModel
    from clef_hf.vocabulary import au_labels

    directory = tmp_path / "clip-vit"
    tiny_clip.save_pretrained(directory)
    (directory / "vocab.json").write_text(json.dumps(tokenizer.get_vocab()))
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    }))
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    assert not (directory / "tokenizer.json").exists()

    processor = CLEFProcessor.from_pretrained(directory)
    prompt = "a photo of a person with lip corner puller."
    assert processor.tokenizer(prompt)["input_ids"] == tokenizer(prompt)["input_ids"]
    model = CLEFModel.from_clip(str(directory), tokenizer=processor, task="au", **au_labels([1, 12]))
    processor.check_fits(model.config.text_config)
    torch.testing.assert_close(model.label_embeddings.norm(dim=-1), torch.ones(2))

"""Shared fixtures: a real BPE tokenizer trained offline on the package's label texts, and tiny CLIP/CLEF configs.

HF_HUB_OFFLINE is set before anything imports huggingface_hub, which reads it once at import.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import CLIPConfig, CLIPModel  # noqa: E402

from clef_hf import CLEFConfig, CLEFModel, CLEFProcessor, train_clip_tokenizer  # noqa: E402
from clef_hf.vocabulary import au_labels, expression_labels  # noqa: E402

IMAGE_SIZE = 32
PROJECTION_DIM = 16


@pytest.fixture(scope="session")
def tokenizer():
    return train_clip_tokenizer(vocab_size=600)


def tiny_text_config(tokenizer) -> dict:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def random_features(n: int, d: int = 8, seed: int = 0, requires_grad: bool = False) -> torch.Tensor:
    """(n, d) standard-normal float64 features from a seeded generator, for the loss tests."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float64).requires_grad_(requires_grad)


def tiny_vision_config() -> dict:
    return {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
    }


@pytest.fixture
def make_config(tokenizer):
    """Build a tiny CLEFConfig; keyword arguments override the defaults."""

    def make(task: str | None = "au", **kwargs) -> CLEFConfig:
        labels = {}
        if task == "au":
            labels = au_labels([1, 2, 4, 6, 12])
        elif task == "expression":
            labels = expression_labels()
        arguments = {
            "vision_config": tiny_vision_config(),
            "text_config": tiny_text_config(tokenizer),
            "projection_dim": PROJECTION_DIM,
            "task": task,
            **labels,
            **kwargs,
        }
        return CLEFConfig(**arguments)

    return make


@pytest.fixture
def au_model(make_config, tokenizer):
    torch.manual_seed(0)
    model = CLEFModel(make_config("au"))
    model.update_label_embeddings(tokenizer)
    return model.eval()


@pytest.fixture
def tiny_clip(tokenizer):
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=tiny_text_config(tokenizer), vision_config=tiny_vision_config(), projection_dim=PROJECTION_DIM
    )
    return CLIPModel(config).eval()


@pytest.fixture
def processor(tokenizer):
    return CLEFProcessor.from_tokenizer(tokenizer, image_size=IMAGE_SIZE)


@pytest.fixture
def pixel_values():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> str:
    """synthfaces with 4 training and 2 test subjects, 2 frames per activity: 64 + 32 images of 32 px, on disk."""
    from dataset_builders import build_dataset

    root = tmp_path_factory.mktemp("tiny-faces")
    splits = build_dataset("synthfaces", cache_dir=str(root / "cache"), num_subjects=6, num_test_subjects=2,
                           frames_per_activity=2, image_size=IMAGE_SIZE)
    splits.save_to_disk(str(root / "saved"))
    return str(root / "saved")


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory) -> str:
    """A CLEFConfig JSON of a tiny model (the text vocabulary is filled in from the package tokenizer)."""
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "max_position_embeddings": 77}
    path.write_text(json.dumps({"vision_config": tiny_vision_config(), "text_config": text,
                                "projection_dim": PROJECTION_DIM}))
    return str(path)


@pytest.fixture
def fresh_accelerator_state():
    """Training runs build their own Accelerator; reset Accelerate's process-wide singletons after each test."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on 2 shared cores: one intra-op thread is several times faster than two that wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

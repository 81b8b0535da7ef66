"""Tests of clef_hf.training.distributed: two CPU processes (gloo, Accelerate's DDP) reproduce the loss and the
parameter gradients of one process on the concatenated batch."""

import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from clef_hf import CLEFModel, pretraining_loss
from clef_hf.training.distributed import gather_features, gather_for_contrastive, gather_labels

WORLD_SIZE = 2
EPSILON = 0.25
ACTIVITY_LABELS = [0, 1, 0, 2, 1, 2, 0, 1]
ACTIVITY_TEXTS = [
    "chatting with an interviewer and laughing at a funny joke",
    "watching a sad documentary",
    "startled by a sudden, loud burst of sound",
]


class FeatureModel(nn.Module):
    """CLEF as one module returning the features of both views and of the texts, so that DDP, which synchronises
    gradients through `forward`, sees a single call per step (as in pre-training)."""

    def __init__(self, model: CLEFModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, augmented_pixel_values, input_ids, attention_mask):
        images = self.model.get_image_features(torch.cat([pixel_values, augmented_pixel_values]))
        texts = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return (*images.chunk(2), texts)


def build_model(inputs: dict) -> CLEFModel:
    model = CLEFModel(inputs["config"])
    model.load_state_dict(inputs["state_dict"])
    model.logit_scale.requires_grad_(False)  # pre-training uses the fixed ε, as in clef_hf.training.pretrain
    return model


def global_loss(image, augmented, text, labels) -> torch.Tensor:
    return pretraining_loss(image, augmented, text, labels, temperature=EPSILON)


def trainable_gradients(model: CLEFModel) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def distributed_worker(rank: int, store_path: str, inputs_path: str, results_path: str) -> None:
    """One of WORLD_SIZE processes: Accelerate on CPU (gloo, DDP), local rows of the batch, gathered loss."""
    from accelerate import Accelerator

    # The process group is set up through a file rather than a TCP port, so parallel test runs cannot collide;
    # Accelerate adopts an initialised group and reads its layout from these variables.
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), LOCAL_WORLD_SIZE=str(WORLD_SIZE),
        OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store_path}", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=60)
    )
    accelerator = Accelerator(cpu=True)
    assert (accelerator.process_index, accelerator.num_processes) == (rank, WORLD_SIZE)
    inputs = torch.load(inputs_path, weights_only=False)
    per_process = len(ACTIVITY_LABELS) // WORLD_SIZE
    rows = slice(rank * per_process, (rank + 1) * per_process)

    results = {}
    for scale_by_world_size in (True, False):
        model = build_model(inputs)
        network = accelerator.prepare(FeatureModel(model))
        assert isinstance(network, nn.parallel.DistributedDataParallel)
        image, augmented, text = network(
            inputs["pixel_values"][rows], inputs["augmented_pixel_values"][rows],
            inputs["input_ids"][rows], inputs["attention_mask"][rows],
        )
        labels = gather_labels(inputs["labels"][rows], rank, WORLD_SIZE)
        all_image, all_augmented = gather_for_contrastive(image, augmented, accelerator=accelerator)
        loss = global_loss(all_image, all_augmented, gather_features(text, rank, WORLD_SIZE), labels)
        accelerator.backward(loss * WORLD_SIZE if scale_by_world_size else loss)
        results[scale_by_world_size] = {
            "loss": loss.detach(), "labels": labels, "gradients": trainable_gradients(model)
        }

    # Uneven local batches must fail with a clear message on every process, not hang in all_gather.
    features = torch.zeros(per_process - rank, 4)
    try:
        gather_features(features, rank, WORLD_SIZE)
        results["uneven_error"] = None
    except ValueError as error:
        results["uneven_error"] = str(error)

    if rank == 0:
        torch.save(results, results_path)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tokenizer) -> tuple[dict, str]:
    from conftest import IMAGE_SIZE, PROJECTION_DIM, tiny_text_config, tiny_vision_config
    from clef_hf import CLEFConfig

    config = CLEFConfig(
        vision_config=tiny_vision_config(), text_config=tiny_text_config(tokenizer), projection_dim=PROJECTION_DIM,
        task=None,
    )
    torch.manual_seed(0)
    model = CLEFModel(config)
    generator = torch.Generator().manual_seed(0)
    batch = len(ACTIVITY_LABELS)
    tokens = tokenizer([ACTIVITY_TEXTS[label] for label in ACTIVITY_LABELS], padding=True, return_tensors="pt")
    data = {
        "config": config,
        "state_dict": model.state_dict(),
        # Two fixed pixel tensors stand in for the two augmented views.
        "pixel_values": torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "augmented_pixel_values": torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "labels": torch.tensor(ACTIVITY_LABELS),
    }
    path = tmp_path_factory.mktemp("distributed") / "inputs.pt"
    torch.save(data, path)
    return data, str(path)


def test_two_processes_match_one_process_on_the_concatenated_batch(inputs, tmp_path):
    data, inputs_path = inputs
    results_path = tmp_path / "results.pt"
    mp.spawn(
        distributed_worker, args=(str(tmp_path / "store"), inputs_path, str(results_path)), nprocs=WORLD_SIZE, join=True
    )
    results = torch.load(results_path, weights_only=False)

    model = build_model(data)
    network = FeatureModel(model)
    image, augmented, text = network(
        data["pixel_values"], data["augmented_pixel_values"], data["input_ids"], data["attention_mask"]
    )
    reference_loss = global_loss(image, augmented, text, data["labels"])
    reference_loss.backward()
    reference = trainable_gradients(model)
    assert len(reference) > 10 and all(g.abs().sum() > 0 for g in reference.values())

    scaled = results[True]
    assert torch.equal(scaled["labels"], data["labels"]), "labels are gathered in rank order"
    torch.testing.assert_close(scaled["loss"], reference_loss.detach(), rtol=1e-6, atol=0)
    assert scaled["gradients"].keys() == reference.keys()
    for name, gradient in reference.items():
        torch.testing.assert_close(scaled["gradients"][name], gradient, rtol=1e-4, atol=1e-6, msg=name)

    # Negative control: without the world-size factor, DDP's average leaves 1/W of every gradient.
    unscaled = results[False]
    torch.testing.assert_close(unscaled["loss"], reference_loss.detach(), rtol=1e-6, atol=0)
    differs = [
        name for name, gradient in reference.items()
        if not torch.allclose(unscaled["gradients"][name], gradient, rtol=1e-4, atol=1e-6)
    ]
    assert len(differs) > len(reference) // 2, "the control must fail the comparison above"
    for name, gradient in reference.items():
        torch.testing.assert_close(unscaled["gradients"][name], gradient / WORLD_SIZE, rtol=1e-4, atol=1e-6, msg=name)

    message = results["uneven_error"]
    assert message is not None and "[4, 3]" in message and "drop_last" in message


def test_single_process_returns_inputs_unchanged():
    features = torch.randn(3, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    assert gather_features(features, 0, 1) is features
    assert gather_labels(labels, 0, 1) is labels


def test_bad_rank_or_missing_process_group_is_reported():
    with pytest.raises(ValueError, match="rank 2, world_size 2"):
        gather_features(torch.zeros(2, 3), 2, 2)
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="process group"):
            gather_features(torch.zeros(2, 3), 0, 2)

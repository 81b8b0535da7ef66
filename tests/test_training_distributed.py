"""The pre-training loop itself on two CPU processes (gloo, Accelerate's DDP) ends with the weights of one process
that sees the same global batches: the gathered contrastive loss and its gradients are those of the whole batch. For
EmoCo, whose loss is per process, the averaged gradients and the queues filled from every process's keys must give
the same result."""

import pytest

import json
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

WORLD_SIZE = 2
GLOBAL_BATCH = 16


def loop_arguments(output_dir: str, dataset: str, config_file: str, per_device_batch: int, losses: str):
    from clef_hf.training import PretrainingArguments

    emoco = dict(emoco_queue_size=16, emoco_momentum=0.5) if losses == "emoco" else {}
    # No augmentation (the two views are the same image), so both runs see identical inputs.
    return PretrainingArguments(
        output_dir=output_dir, dataset=dataset, config_file=config_file, per_device_train_batch_size=per_device_batch,
        max_steps=2, learning_rate=1e-3, crop_scale_min=1.0, flip_probability=0.0, max_rotation_degrees=0.0,
        report_to="none", seed=4, checkpointing_steps=1, logging_steps=1,
        max_grad_norm=1e9,  # never clips, but logs the global gradient norm of every step
        cpu=True,  # with a process group set up, Accelerate runs MULTI_CPU (gloo) only when told to use the CPU
        pretraining_losses=losses, **emoco,
    )


def join_process_group(rank: int, store: str) -> None:
    """Make this spawned process rank `rank` of a gloo group of `WORLD_SIZE` on the CPU."""
    # CUDA hidden: on a one-GPU machine Accelerate's barrier would name GPU `rank` even for gloo on the CPU.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                      LOCAL_WORLD_SIZE=str(WORLD_SIZE), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo",
                      CUDA_VISIBLE_DEVICES="")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=120))


def worker(rank: int, store: str, output_dir: str, dataset: str, config_file: str, losses: str) -> None:
    join_process_group(rank, store)
    from clef_hf.training import pretrain

    pretrain(loop_arguments(output_dir, dataset, config_file, GLOBAL_BATCH // WORLD_SIZE, losses))
    if dist.is_initialized():  # Accelerate's end_training may already have torn the group down
        dist.destroy_process_group()


@pytest.mark.parametrize("losses", ["image_activity", "emoco", "image_text"])
def test_two_process_pretraining_matches_one_process(tmp_path, tiny_faces, tiny_config_file, losses):
    from accelerate.state import AcceleratorState, GradientState

    from clef_hf.training import pretrain

    mp.spawn(worker, args=(str(tmp_path / "store"), str(tmp_path / "two"), tiny_faces, tiny_config_file, losses),
             nprocs=WORLD_SIZE, join=True)
    try:
        pretrain(loop_arguments(str(tmp_path / "one"), tiny_faces, tiny_config_file, GLOBAL_BATCH, losses))
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    two = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    one = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    assert two.keys() == one.keys()
    moved = 0
    initial = load_file(str(tmp_path / "one" / "checkpoints" / "step-1" / "model.safetensors"))
    for name in one:
        if name.endswith("k_proj.bias"):
            # The key bias shifts every attention logit of a query equally, so softmax cancels it: its true gradient
            # is 0 and both runs see only rounding noise, which AdamW's normalised step turns into lr-sized moves.
            continue
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=2e-5, msg=name)
        moved += not torch.equal(one[name], initial.get(f"model.{name}", one[name]))
    assert moved > 10, "the second step must change the weights, or the comparison proves nothing"
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["step-1", "step-2"]
    # AdamW's step barely depends on the gradient's scale, so the weights alone would not catch gradients off by the
    # world size; the logged global gradient norms do.
    norms = {run: [json.loads(line)["train/grad_norm"] for line in (tmp_path / run / "metrics.jsonl").open()]
             for run in ("one", "two")}
    assert len(norms["one"]) == 2 and norms["one"][0] > 0
    torch.testing.assert_close(norms["two"], norms["one"], rtol=1e-4, atol=0)
    if losses == "emoco":  # the queues hold every process's keys, in the one-process order
        two_state = load_file(str(tmp_path / "two" / "checkpoints" / "step-2" / "model.safetensors"))
        one_state = load_file(str(tmp_path / "one" / "checkpoints" / "step-2" / "model.safetensors"))
        assert torch.equal(two_state["queue.filled_slots"], one_state["queue.filled_slots"])
        assert int(one_state["queue.filled_slots"].sum()) > 16  # two batches of keys, some queues holding both
        torch.testing.assert_close(two_state["queue.keys"], one_state["queue.keys"], rtol=1e-4, atol=2e-5)


def cl_ile_worker(rank: int, store: str, output_dir: str, dataset: str, config_file: str) -> None:
    join_process_group(rank, store)
    from clef_hf.training import FineTuningArguments, finetune

    finetune(FineTuningArguments(
        output_dir=output_dir, dataset=dataset, config_file=config_file, task="au", objective="cl_ile",
        per_device_train_batch_size=8, per_device_eval_batch_size=16, max_steps=4, learning_rate=1e-3,
        report_to="none", seed=4, checkpointing_steps=2, cpu=True,
        eval_split="test", test_split="",  # tiny_faces has train and test splits only
    ))
    if dist.is_initialized():
        dist.destroy_process_group()


def test_two_process_cl_ile_trains_each_stage_with_the_other_sides_parameters_unused(
        tmp_path, tiny_faces, tiny_config_file):
    """Each CL-ILE stage leaves half the trainable parameters without gradients; data-parallel training must be told
    (`find_unused_parameters`), or its second step fails waiting for them.
    (Selective Learning weights are batch statistics, so two processes do not equal one on the concatenated batch.)"""
    mp.spawn(cl_ile_worker, args=(str(tmp_path / "store"), str(tmp_path / "two"), tiny_faces, tiny_config_file),
             nprocs=WORLD_SIZE, join=True)
    results = json.loads((tmp_path / "two" / "all_results.json").read_text())
    assert results["global_step"] == 4 and results["objective"] == "cl_ile"
    boundary = load_file(str(tmp_path / "two" / "checkpoints" / "step-2" / "model.safetensors"))
    end = load_file(str(tmp_path / "two" / "checkpoints" / "step-4" / "model.safetensors"))
    assert torch.equal(boundary["identity_label_embeddings"], end["identity_label_embeddings"])  # frozen in stage II
    assert not torch.equal(boundary["au_embeddings"], end["au_embeddings"])

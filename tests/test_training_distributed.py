"""The pre-training loop itself on two CPU processes (gloo, Accelerate's DDP) ends with the weights of one process
that sees the same global batches: the gathered contrastive loss and its gradients are those of the whole batch."""

import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

WORLD_SIZE = 2
GLOBAL_BATCH = 16


def loop_arguments(output_dir: str, dataset: str, config_file: str, per_device_batch: int):
    from clef_hf.training import PretrainingArguments

    # No augmentation (the two views are the same image), so both runs see identical inputs.
    return PretrainingArguments(
        output_dir=output_dir, dataset=dataset, config_file=config_file, per_device_train_batch_size=per_device_batch,
        max_steps=2, learning_rate=1e-3, crop_scale_min=1.0, flip_probability=0.0, max_rotation_degrees=0.0,
        report_to="none", seed=4, checkpointing_steps=1,
    )


def worker(rank: int, store: str, output_dir: str, dataset: str, config_file: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                      LOCAL_WORLD_SIZE=str(WORLD_SIZE), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=120))
    from clef_hf.training import pretrain

    pretrain(loop_arguments(output_dir, dataset, config_file, GLOBAL_BATCH // WORLD_SIZE))
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_pretraining_matches_one_process(tmp_path, tiny_faces, tiny_config_file):
    from accelerate.state import AcceleratorState, GradientState

    from clef_hf.training import pretrain

    mp.spawn(worker, args=(str(tmp_path / "store"), str(tmp_path / "two"), tiny_faces, tiny_config_file),
             nprocs=WORLD_SIZE, join=True)
    try:
        pretrain(loop_arguments(str(tmp_path / "one"), tiny_faces, tiny_config_file, GLOBAL_BATCH))
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    two = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    one = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    assert two.keys() == one.keys()
    moved = 0
    initial = load_file(str(tmp_path / "one" / "checkpoints" / "step-1" / "model.safetensors"))
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=2e-5, msg=name)
        moved += not torch.equal(one[name], initial.get(f"model.{name}", one[name]))
    assert moved > 10, "the second step must change the weights, or the comparison proves nothing"
    assert sorted(os.listdir(tmp_path / "two" / "checkpoints")) == ["step-1", "step-2"]

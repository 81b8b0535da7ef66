"""Gathering features and labels across processes, so that the contrastive losses of CLEF see the global batch.

Kept apart from `clef_hf.losses`, as open_clip keeps `gather_features` apart from its losses: the loss functions take
features and labels, and the training loop gathers them first when it runs on several processes.

Gradients, and why the caller multiplies the loss by the world size
--------------------------------------------------------------------
Every process gathers the same global batch `z = [z_0; ...; z_{W-1}]` (z_r: the (n, d) features of process r) and
computes the same global loss `L(z)`. A single process on the concatenated batch would get the parameter gradient

    ∇L = Σ_r J_rᵀ ∂L/∂z_r,        J_r = ∂z_r/∂θ.

`gather_features` gathers without gradient and puts the live local tensor back into its own slot, so the backward on
process r reaches the parameters through z_r only: `g_r = J_rᵀ ∂L/∂z_r`. Data-parallel training (DDP, as
`accelerator.prepare` sets it up) then AVERAGES gradients over processes: `(1/W) Σ_r g_r = ∇L / W`. Hence the
training loop backpropagates `world_size * loss`:

    accelerator.backward(loss * accelerator.num_processes)

after which the averaged gradient is exactly `∇L`, the single-process gradient of the global batch
(`tests/test_distributed.py` checks this on two processes, and that without the factor the gradients are `∇L / W`).
The loss value to log is `loss` itself, the same on every process.

This is exact for every parameter that reaches the loss only through gathered features, which holds for CLEF's
pre-training: Eq. 1-2 use the fixed temperature ε and `logit_scale` is frozen. A parameter that enters a gathered loss
directly (for example a learnable temperature) already gets its full gradient on every process, so the factor would
make its gradient W times too large; such a loss needs that gradient divided by W, or a gather whose backward sums the
slot gradients over processes (`torch.distributed.nn.functional.all_gather`), without the factor. Stage 0's image-text
loss, whose temperature is the model's learnable one, passes it through `replicated_gradient` for that division.

open_clip's default (`gather_with_grad=False`, global loss) is the same gather without the factor, i.e. its feature
gradients are `1/W` of the global-batch gradient, which its learning rate absorbs.
"""

import torch
import torch.distributed as dist


def _check_process_group(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank must lie in [0, world_size) with world_size >= 1, got rank {rank}, world_size {world_size}."
        )
    if world_size > 1:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                f"Gathering over world_size {world_size} needs an initialised torch.distributed process group; run "
                "under `accelerate launch` or `torchrun` and create the Accelerator first."
            )
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise ValueError(
                f"rank {rank} / world_size {world_size} do not match the process group's rank {dist.get_rank()} / "
                f"world size {dist.get_world_size()}."
            )


def _gather_without_gradient(tensor: torch.Tensor, world_size: int, name: str) -> list[torch.Tensor]:
    """All processes' `tensor`, in rank order, after checking that their shapes agree (all_gather needs equal shapes,
    and mismatched ones would otherwise hang or fail with an opaque error)."""
    shape = torch.tensor(tensor.shape, dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(world_size)]
    dist.all_gather(shapes, shape)
    shapes = [tuple(s.tolist()) for s in shapes]
    if any(s != shapes[0] for s in shapes):
        sizes = [s[0] for s in shapes]
        raise ValueError(
            f"Cannot gather {name}: the processes hold shapes {shapes} (local batch sizes {sizes} on ranks 0..."
            f"{world_size - 1}). The contrastive losses need the same local batch size on every process: use even "
            "batches (drop_last=True in the DataLoader, or Accelerate's even_batches)."
        )
    tensor = tensor.detach().contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(gathered, tensor)
    return gathered


def _gather_around_local(tensor: torch.Tensor, rank: int, world_size: int, name: str) -> torch.Tensor:
    """Every process's `tensor` concatenated in rank order, with this process's own rows being `tensor` itself (so
    its gradient, if any, flows through them); `tensor` unchanged with one process."""
    _check_process_group(rank, world_size)
    if world_size == 1:
        return tensor
    gathered = _gather_without_gradient(tensor, world_size, name)
    gathered[rank] = tensor
    return torch.cat(gathered, dim=0)


def gather_features(features: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The global batch of features, in rank order, with this process's rows still attached to its autograd graph.

    The other processes' rows carry no gradient. Backpropagate `loss * world_size` through a loss computed on the
    result; see the module docstring for why this gives exactly the gradient of one process on the global batch.

    Args:
        features: (n, d) local features; n must be the same on every process.
        rank: this process's index, `accelerator.process_index`.
        world_size: the number of processes, `accelerator.num_processes`.

    Returns:
        (world_size * n, d) features; rows `rank * n : (rank + 1) * n` are `features` itself. With `world_size == 1`,
        `features` unchanged.

    Raises:
        ValueError: if the local shapes differ between processes (uneven last batch).
    """
    return _gather_around_local(features, rank, world_size, "features")


def gather_labels(labels: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The global batch of labels, in rank order, aligned with `gather_features`; no gradient.

    Args:
        labels: (n, ...) local labels, e.g. (n,) activity ids; n must be the same on every process.
        rank: this process's index.
        world_size: the number of processes.

    Returns:
        (world_size * n, ...) labels. With `world_size == 1`, `labels` unchanged.
    """
    return _gather_around_local(labels, rank, world_size, "labels")


def replicated_gradient(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """`tensor` itself in value, with its gradient divided by `world_size`.

    For a tensor that enters the global loss directly rather than through gathered features, such as a learnable
    temperature: every process computes the same global loss, so such a tensor's gradient is already the full one on
    each process, and backpropagating `loss * world_size` (see the module docstring) would make it `world_size` times
    too large. Through this function it comes out exact after data-parallel averaging.

    Args:
        tensor: any tensor, e.g. the 0-dim temperature `1 / logit_scale.exp()`.
        world_size: the number of processes, `accelerator.num_processes`.

    Returns:
        A tensor equal to `tensor` (exactly: the added term is `0 * factor`) whose gradient is `1 / world_size` of
        `tensor`'s; `tensor` unchanged with one process.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}.")
    if world_size == 1:
        return tensor
    constant = tensor.detach()
    return constant + (tensor - constant) / world_size


def gather_for_contrastive(*tensors: torch.Tensor, accelerator) -> tuple[torch.Tensor, ...]:
    """Gather several local tensors for a global contrastive loss with an `accelerate.Accelerator`'s process layout.

    Floating-point tensors go through `gather_features` (local rows keep their gradient), the others through
    `gather_labels`.

    Args:
        *tensors: (n, ...) local tensors, n the same on every process.
        accelerator: the `accelerate.Accelerator` of the run.

    Returns:
        One (num_processes * n, ...) tensor per input, in the same order.
    """
    rank, world_size = accelerator.process_index, accelerator.num_processes
    return tuple(
        gather_features(t, rank, world_size) if t.is_floating_point() else gather_labels(t, rank, world_size)
        for t in tensors
    )


__all__ = ["gather_features", "gather_for_contrastive", "gather_labels", "replicated_gradient"]

"""AdamW and the learning-rate schedule of both stages (paper Sec. 4.1): linear warm-up, then cosine decay to a
floor (1e-6 in the paper), counted in optimizer steps."""

import math
import re

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from .arguments import TrainingLoopArguments


def text_parameter_names(model: torch.nn.Module) -> set[str]:
    """Parameters of the text side (text encoder, text projection) and the logit scale, by name."""
    return {
        name for name, _ in model.named_parameters()
        if {"text_model", "text_projection", "logit_scale"} & set(name.split("."))
    }


_VISION_LAYER = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.")
_VISION_STEM = ("vision_model.embeddings.", "vision_model.pre_layrnorm.")


def vision_layer_scales(model: torch.nn.Module, layer_decay: float) -> dict[str, float]:
    """Layer-wise learning-rate decay of the image encoder (as BEiT and MAE fine-tune ViTs): parameter name -> the
    factor `layer_decay ** (L + 1 - i)` for the parameters of layer i (the patch and position embeddings are layer 0,
    the L transformer layers 1..L); the post-layernorm, the projection, the text side and any head keep 1.

    With `layer_decay=1` every factor is 1. A smaller value moves the layers near the pixels less, to keep more of a
    pre-trained start (on the demo's stage 0 it cost validation F1: docs/diagnosis.md, section 10).
    """
    layers = {}  # parameter name -> its layer, 0 (stem) to L
    for name, _ in model.named_parameters():
        if match := _VISION_LAYER.search(name):
            layers[name] = int(match.group(1)) + 1
        elif any(stem in name for stem in _VISION_STEM):
            layers[name] = 0
    depth = max(layers.values(), default=0)
    return {name: layer_decay ** (depth + 1 - layer) for name, layer in layers.items()}


def _full_rate_first(item) -> tuple:
    (is_text, no_decay, scale), _ = item
    return is_text, no_decay, -scale


def make_optimizer(model: torch.nn.Module, args: TrainingLoopArguments) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, with the text side at `text_learning_rate_factor` times the rate and the
    image encoder's layers at `layer_decay` powers of it ([`vision_layer_scales`]).

    Biases, layer norms, embeddings of positions and classes and the logit scale get no weight decay (as in CLIP).
    With `args.fused_adamw` the step is torch's fused kernel, else the implementation torch picks.
    """
    text_names = text_parameter_names(model)
    layer_scales = vision_layer_scales(model, args.layer_decay)
    groups: dict[tuple[bool, bool, float], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = parameter.ndim < 2 or "embedding" in name or name.endswith("logit_scale")
        groups.setdefault((name in text_names, no_decay, layer_scales.get(name, 1.0)), []).append(parameter)
    param_groups = [
        {
            "params": parameters,
            "lr": args.learning_rate * scale * (args.text_learning_rate_factor if is_text else 1.0),
            "weight_decay": 0.0 if no_decay else args.weight_decay,
        }
        # the full-rate group first, so that the logged rate (`get_last_lr()[0]`) is the peak one
        for (is_text, no_decay, scale), parameters in sorted(groups.items(), key=_full_rate_first)
    ]
    return torch.optim.AdamW(
        param_groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
        **({"fused": True} if getattr(args, "fused_adamw", False) else {}),
    )


def training_steps(args: TrainingLoopArguments, batches_per_epoch: int) -> tuple[int, int, int]:
    """`(updates_per_epoch, total_updates, warmup_updates)` in optimizer steps; `max_steps` overrides the epochs."""
    updates_per_epoch = max(1, math.ceil(batches_per_epoch / args.gradient_accumulation_steps))
    total = args.max_steps if args.max_steps > 0 else max(1, math.ceil(args.num_train_epochs * updates_per_epoch))
    warmup = min(total, round(args.warmup_epochs * updates_per_epoch))
    return updates_per_epoch, total, warmup


def make_scheduler(
    optimizer: torch.optim.Optimizer, args: TrainingLoopArguments, total: int, warmup: int,
    stages: tuple[int, ...] | None = None,
):
    """Linear warm-up over `warmup` steps, then cosine decay to `min_learning_rate` at step `total`.

    With `stages` (their lengths in steps, summing to `total`), the schedule starts again at each stage: its own
    warm-up (at most the stage's length) and decay. CL-ILE trains one network after the other, and the second should
    not start where the first one's decay left the rate.
    """
    floor = min(1.0, args.min_learning_rate / args.learning_rate)
    if stages is None:
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, num_warmup_steps=warmup, num_training_steps=total, min_lr_rate=floor
        )
    if sum(stages) != total or min(stages) < 1:
        raise ValueError(f"stages {stages} must be positive step counts summing to {total}.")

    def factor(step: int) -> float:
        start = 0
        for length in stages[:-1]:  # find the stage of `step`; steps past the end stay in the last one
            if step < start + length:
                break
            start += length
        else:
            length = stages[-1]
        local, stage_warmup = step - start, min(warmup, length)
        if local < stage_warmup:
            return local / stage_warmup
        progress = min(1.0, (local - stage_warmup) / max(1, length - stage_warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


__all__ = ["make_optimizer", "make_scheduler", "text_parameter_names", "training_steps", "vision_layer_scales"]

"""Stage 1 of CLEF: weakly-supervised pre-training on recorded activities (paper Sec. 3.1, Eq. 1-2).

Images of the same activity are positives. Each step augments every image twice, embeds one activity prompt per image
(one template drawn per mini-batch), gathers the features of the whole global batch across processes, and minimises
Eq. 2 (`L_IĨ + L_IA`), or `L_IĨ` alone for Table 6's image-only pre-training (PI), or, with
`--pretraining_losses self_supervised`, `L_IĨ` with each image as its own class (SimCLR-style: the two views of an
image are its only positives), which needs no activity labels.

`--pretraining_losses emoco` trains EmoCo's objective instead (Sun et al., FG 2021, Eq. 1-5) from expression labels:
the first view goes through the online encoder (the CLEF model's vision side and an MLP head), the second through the
momentum encoder; the loss is the emotion classification of the queries plus their contrast with the keys stored in
the queue of their own emotion. It needs no activities, so it pre-trains on RAF-DB, AffectNet or FERPlus.

`--pretraining_losses image_text` is stage 0, the face-language starting point that FaRL (Zheng et al., CVPR 2022)
gives CLEF, in miniature: the image and text towers learn CLIP's symmetric image-caption loss (Radford et al., 2021)
on any data set with an image column and a caption column (`--caption_column`), one augmented view per image, at the
model's learnable temperature. Its saved model is a CLEF checkpoint that stage 1 and fine-tuning start from.

`pretrain(args)` reads top to bottom like Accelerate's `complete_nlp_example.py`; `scripts/pretrain.py` calls it.
"""

import json
import math
import os
import random

import torch
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..emoco import emoco_loss, emotion_aware_contrastive_loss, emotion_classification_loss
from ..emoco.modeling import EmoCoPretrainingModule
from ..losses import image_text_contrastive_loss, pretraining_loss, supervised_contrastive_loss
from ..modeling_clef import CLEFModel
from ..vocabulary import fill_template
from .arguments import PretrainingArguments
from .augmentation import augment_images
from .checkpointing import load_checkpoint, resolve_checkpoint, save_checkpoint, save_directory_atomically
from .data import (
    EpochSeededSampler,
    FacialBehaviorCollator,
    ImageCaptionCollator,
    activities_of,
    check_captions,
    epoch_batches,
    get_split,
    load_splits,
    with_pixel_values,
)
from .distributed import gather_features, gather_labels, replicated_gradient
from .initialization import labels_of_split, load_model_and_processor
from .optimization import make_optimizer, make_scheduler, training_steps
from .tracking import MetricsLog, make_accelerator, tracker_config


class ContrastiveFeatures(nn.Module):
    """The CLEF model as one module whose forward returns image and text features, so that data-parallel training
    (which synchronises gradients through `forward`) sees a single call per step."""

    def __init__(self, model: CLEFModel):
        super().__init__()
        self.model = model

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(batch, 3, size, size) images and optional (texts, length) tokens -> (batch, d) and (texts, d) features."""
        image_features = self.model.get_image_features(pixel_values)
        text_features = None
        if input_ids is not None:
            text_features = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return image_features, text_features


def step_generator(seed: int, step: int, process_index: int) -> torch.Generator:
    """The random source of one micro-batch's augmentations: a function of the seed, the micro-batch counter and the
    process only, so a resumed run draws exactly what the interrupted run would have."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1009 + process_index)


def draw_template(seed: int, step: int, num_templates: int) -> int:
    """One prompt template per mini-batch (paper Sec. 3.3), the same on every process."""
    return random.Random(seed * 7919 + step).randrange(num_templates)


def pretrain(args: PretrainingArguments) -> dict:
    """Run stage 1 (or stage 0, with `pretraining_losses="image_text"`) and save the pre-trained CLEF model and
    processor to `args.model_output_dir`.

    Returns:
        `{"global_step", "train_loss", "model_dir"}`.
    """
    # 1. Devices, precision, trackers; seeding.
    accelerator = make_accelerator(args)
    set_seed(args.seed)

    # 2. Data: the training split's images and activities (or expressions, for EmoCo; captions, for stage 0).
    with accelerator.main_process_first():
        splits = load_splits(args)
    self_supervised = args.pretraining_losses == "self_supervised"  # no labels: each image is its own class
    emoco = args.pretraining_losses == "emoco"
    image_text = args.pretraining_losses == "image_text"  # stage 0: each image's caption is its positive
    label_column = None if self_supervised or image_text else "expression" if emoco else "activity"
    needed = {None: ("image",), "expression": ("image", "expression"),
              "activity": ("image", "activity", "activity_description")}[label_column]
    if image_text:
        needed = ("image", args.caption_column)
    train_split = get_split(splits, args.train_split, needed, "--train_split")
    if image_text:
        check_captions(train_split, args.caption_column, args.train_split)
    activities, activity_descriptions = activities_of(train_split) if label_column == "activity" else ([], [])
    if label_column == "activity" and len(activities) < 2:
        raise ValueError(f"Pre-training needs at least 2 activities as positives/negatives; got {activities}.")
    emotions = labels_of_split(train_split, "expression")["label_names"] if emoco else []
    if emoco:  # every image needs an emotion: its queue and its classifier row
        bad = sorted({label for label in train_split["expression"] if not 0 <= label < len(emotions)})
        if bad:
            raise ValueError(f"EmoCo needs an expression class for every image; the {args.train_split!r} split has "
                             f"labels {bad} outside 0..{len(emotions) - 1}. Filter those rows out first.")

    # 3. Model, prompts, data loader, optimizer, schedule.
    model, processor = load_model_and_processor(args.model_name_or_path, args.config_file, task=None)
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    uses_text = args.pretraining_losses == "image_activity"
    if not image_text:  # Eq. 1-2 use the fixed ε, not the learnable τ; stage 0 learns τ, as CLIP and FaRL do
        model.logit_scale.requires_grad_(False)
    if not uses_text and not image_text:  # PI, SimCLR, EmoCo: the text side is unused; frozen, so data-parallel
        for module in (model.text_model, model.text_projection):  # training does not wait for its gradients
            module.requires_grad_(False)
    temperature = args.temperature or model.config.pretraining_temperature
    templates = model.config.activity_templates
    activity_tokens = [
        processor.tokenizer(fill_template(template, activity_descriptions), padding=True, return_tensors="pt")
        for template in templates
    ] if uses_text else []  # per template: (num_activities, length)

    if args.cache_pixel_values:  # every image through the processor once, not once per epoch (the same pixels)
        with accelerator.main_process_first():
            train_split = with_pixel_values(train_split, processor.image_processor, num_proc=args.num_proc)
    sampler = EpochSeededSampler(len(train_split), args.seed)
    if image_text:
        collator = ImageCaptionCollator(processor.image_processor, processor.tokenizer, args.caption_column,
                                        model.config.text_config.max_position_embeddings)
    else:
        collator = FacialBehaviorCollator(processor.image_processor, (label_column,) if label_column else (),
                                          {"activity": activities})
    train_dataloader = DataLoader(
        train_split,
        batch_size=args.per_device_train_batch_size,
        sampler=sampler,
        collate_fn=collator,
        num_workers=args.dataloader_num_workers,
    )
    if emoco:
        network = EmoCoPretrainingModule(model, len(emotions), args.emoco_feature_dim, args.emoco_queue_size)
    else:
        network = ContrastiveFeatures(model)
    optimizer = make_optimizer(network, args)
    network, optimizer, train_dataloader = accelerator.prepare(network, optimizer, train_dataloader)
    updates_per_epoch, total_updates, warmup_updates = training_steps(args, len(train_dataloader))
    scheduler = make_scheduler(optimizer, args, total_updates, warmup_updates)
    accelerator.register_for_checkpointing(scheduler)
    num_epochs = math.ceil(total_updates / updates_per_epoch)

    # 4. Resume where an interrupted run stopped.
    loop_state = {"global_step": 0, "epoch": 0, "batches_done": 0, "running_loss": 0.0, "running_count": 0}
    checkpoint = resolve_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if checkpoint is not None:
        loop_state = load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"Resumed from {checkpoint} at step {loop_state['global_step']}.")
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("clef_pretraining", config=tracker_config(args))
    metrics_log = MetricsLog(accelerator, args.output_dir, resume_step=loop_state["global_step"] if checkpoint else None)

    # 5. The loop.
    progress = tqdm(
        total=total_updates, initial=loop_state["global_step"], desc="pre-training",
        disable=not accelerator.is_local_main_process,
    )
    network.train()
    last_loss, grad_norm = float("nan"), None
    while loop_state["global_step"] < total_updates and loop_state["epoch"] < num_epochs:
        epoch = loop_state["epoch"]
        for batch in epoch_batches(accelerator, train_dataloader, sampler, epoch, loop_state["batches_done"]):
            micro_step = epoch * len(train_dataloader) + loop_state["batches_done"]
            with accelerator.accumulate(network):
                generator = step_generator(args.seed, micro_step, accelerator.process_index)
                if emoco:
                    loss = emoco_batch_loss(accelerator, network, batch, generator, args)
                elif image_text:
                    loss = image_text_batch_loss(accelerator, network, batch, generator, args)
                else:
                    tokens = activity_tokens[draw_template(args.seed, micro_step, len(templates))] if uses_text else None
                    loss = contrastive_batch_loss(accelerator, network, batch, generator, args, tokens, temperature)
                # The contrastive losses (stage 0's too) are those of the global batch, the same on every process, and
                # data-parallel training averages gradients over processes: scale by the world size. EmoCo's loss is
                # per process.
                accelerator.backward(loss if emoco else loss * accelerator.num_processes)
                if accelerator.sync_gradients and args.max_grad_norm:
                    grad_norm = accelerator.clip_grad_norm_(network.parameters(), args.max_grad_norm).item()
                optimizer.step()
                optimizer.zero_grad()
                if emoco and accelerator.sync_gradients:  # Eq. 3 after each update of the online encoder
                    accelerator.unwrap_model(network).update_momentum_encoder(args.emoco_momentum)

            loop_state["batches_done"] += 1
            loop_state["running_loss"] += loss.item()
            loop_state["running_count"] += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            loop_state["global_step"] += 1
            progress.update(1)
            step = loop_state["global_step"]
            if step % args.logging_steps == 0 or step == total_updates:
                last_loss = metrics_log.log_training_window(loop_state, step, scheduler.get_last_lr()[0], epoch,
                                                            grad_norm, progress)
            if step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, args.output_dir, loop_state, args.checkpoints_total_limit)
            if step >= total_updates:
                break
        else:
            loop_state["epoch"] += 1
            loop_state["batches_done"] = 0
    progress.close()

    # 6. Save the pre-trained model (no label set yet) with its processor.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        trained = accelerator.unwrap_model(network).model

        def write(folder: str) -> None:
            trained.save_pretrained(folder)
            processor.save_pretrained(folder)
            with open(os.path.join(folder, "training_args.json"), "w") as file:
                json.dump(args.to_dict(), file, indent=1)

        save_directory_atomically(args.model_output_dir, write)
        accelerator.print(f"Saved the pre-trained model to {args.model_output_dir}.")
    accelerator.end_training()
    return {"global_step": loop_state["global_step"], "train_loss": last_loss, "model_dir": args.model_output_dir}


def contrastive_batch_loss(
    accelerator, network: nn.Module, batch: dict, generator: torch.Generator, args: PretrainingArguments,
    activity_tokens: dict | None, temperature: float,
) -> torch.Tensor:
    """CLEF's Eq. 2 (`image_activity`), `L_IĨ` (`image`) or the SimCLR-style `L_IĨ` (`self_supervised`) of one
    micro-batch, over the global batch.

    Args:
        batch: `pixel_values` (batch, 3, size, size) and, except for `self_supervised`, `activity` (batch,).
        generator: the micro-batch's augmentation source (`step_generator`).
        activity_tokens: the mini-batch's prompt template filled with every activity's description, tokenised
            (`input_ids`, `attention_mask` of shape (num_activities, length)); None when the text side is unused.

    Returns:
        The scalar loss, the same on every process.
    """
    pixel_values = batch["pixel_values"]
    views = torch.cat([
        augment_images(pixel_values, generator, args.augmentation),
        augment_images(pixel_values, generator, args.augmentation),
    ])  # (2 * batch, 3, size, size): one forward for both views
    if "activity" in batch:
        labels = batch["activity"]
    else:  # instance labels, unique across processes: the two views are the only positives
        labels = accelerator.process_index * args.per_device_train_batch_size + torch.arange(
            pixel_values.shape[0], device=pixel_values.device)
    if activity_tokens is not None:
        present, rows = torch.unique(labels, return_inverse=True)  # embed each local activity once
        image_features, text_features = network(
            views,
            activity_tokens["input_ids"][present.cpu()].to(accelerator.device),
            activity_tokens["attention_mask"][present.cpu()].to(accelerator.device),
        )
        activity_features = text_features[rows]  # (batch, d): each image's activity text
    else:
        image_features, _ = network(views)
    image_features, augmented_features = image_features.float().chunk(2)

    # The contrastive losses see the global batch; see distributed.gather_features for the gradients.
    rank, world = accelerator.process_index, accelerator.num_processes
    all_labels = gather_labels(labels, rank, world)
    all_images = gather_features(image_features, rank, world)
    all_augmented = gather_features(augmented_features, rank, world)
    if activity_tokens is None:
        return supervised_contrastive_loss(all_images, all_augmented, all_labels, temperature)
    all_activities = gather_features(activity_features.float(), rank, world)
    return pretraining_loss(all_images, all_augmented, all_activities, all_labels, temperature)


def image_text_batch_loss(
    accelerator, network: nn.Module, batch: dict, generator: torch.Generator, args: PretrainingArguments
) -> torch.Tensor:
    """Stage 0 for one micro-batch: CLIP's symmetric image-caption loss over the global batch, at the model's learnable
    temperature (`CLEFModel.temperature`, CLIP's `1 / logit_scale.exp()` bounded by `max_logit_scale`).

    Each image is augmented once; the captions of every process are the negatives of every image, and the reverse.

    Args:
        network: the prepared [`ContrastiveFeatures`].
        batch: `pixel_values` (batch, 3, size, size), and the captions' `input_ids` and `attention_mask`
            (batch, length).
        generator: the micro-batch's augmentation source (`step_generator`).

    Returns:
        The scalar loss, the same on every process.
    """
    view = augment_images(batch["pixel_values"], generator, args.augmentation)
    image_features, text_features = network(view, batch["input_ids"], batch["attention_mask"])
    rank, world = accelerator.process_index, accelerator.num_processes
    all_images = gather_features(image_features.float(), rank, world)
    all_captions = gather_features(text_features.float(), rank, world)
    # τ enters the global loss directly, so every process already has its full gradient: undo the world-size factor
    # the loop applies for the gathered features (see distributed.py).
    temperature = replicated_gradient(accelerator.unwrap_model(network).model.temperature, world)
    return image_text_contrastive_loss(all_images, all_captions, temperature)


def emoco_batch_loss(
    accelerator, network: nn.Module, batch: dict, generator: torch.Generator, args: PretrainingArguments
) -> torch.Tensor:
    """EmoCo's Eq. 1 for one micro-batch: λ L_emo (Eq. 2) + L_cont (Eq. 5), then its keys enter the queues.

    The first view of each image gives the query q (online encoder), the second the positive key k+ (momentum
    encoder). The negatives are the keys already stored, so a batch never contrasts with itself; the batch's keys of
    every process are enqueued afterwards, the same on every process.

    Args:
        network: the prepared [`EmoCoPretrainingModule`].
        batch: `pixel_values` (batch, 3, size, size) and `expression` (batch,) emotion indices.

    Returns:
        The scalar loss of this process's queries.
    """
    pixel_values, labels = batch["pixel_values"], batch["expression"]
    emoco = accelerator.unwrap_model(network)  # the split's labels were checked before training
    queries, keys = network(
        augment_images(pixel_values, generator, args.augmentation),
        augment_images(pixel_values, generator, args.augmentation),
    )
    queries, keys = queries.float(), keys.float()
    negative_keys, negative_labels = emoco.queue.keys_and_labels()
    classifier_weight = emoco.classifier.weight
    loss = emoco_loss(
        emotion_classification_loss(queries, classifier_weight, labels),
        emotion_aware_contrastive_loss(queries, keys, labels, negative_keys, negative_labels, classifier_weight,
                                       args.emoco_temperature),
        args.emoco_loss_weight,
    )
    emoco.queue.enqueue(accelerator.gather(keys), accelerator.gather(labels))
    return loss


__all__ = [
    "ContrastiveFeatures",
    "contrastive_batch_loss",
    "draw_template",
    "emoco_batch_loss",
    "image_text_batch_loss",
    "pretrain",
    "step_generator",
]

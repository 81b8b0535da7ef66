"""Stage 2 of CLEF: fine-tuning for AU detection or expression recognition (paper Sec. 3.2, Eq. 3-6), with the
ablations of Table 6, evaluation after every epoch and the best model kept as a Hub-ready folder.

`--objective cl_ile` trains CL-ILE instead (Lian et al., BMVC 2023) in the same loop: its stage I (the ID encoder and
identity-label embeddings, Eq. 3) for the first `cl_ile_stage_one_fraction` of the steps, then its stage II (the
general encoder and AU embeddings, Eq. 6), each with its own warm-up and decay; evaluation starts with stage II.

Model selection is held out from the reported numbers: `--eval_split` (default `validation`) picks the best epoch
and, for AUs, the decision threshold; `--test_split` (default `test`) is evaluated once, at the end, with that model.

`finetune(args)` reads top to bottom like Accelerate's `complete_nlp_example.py`; `scripts/finetune.py` calls it.
"""

import json
import logging
import math
import os

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..cl_ile.modeling import CLILEModule
from ..losses import au_loss, expression_loss, name_description_loss
from ..modeling_clef import CLEFModel, CLEFOutput
from ..vocabulary import fill_template
from .arguments import FineTuningArguments
from .augmentation import augment_images
from .checkpointing import load_checkpoint, resolve_checkpoint, save_checkpoint, save_directory_atomically
from .data import (
    EpochSeededSampler,
    FacialBehaviorCollator,
    class_weights_from_split,
    epoch_batches,
    get_split,
    load_splits,
    with_pixel_values,
)
from .evaluation import (
    BEST_METRIC,
    INTENSITY_BEST_METRIC,
    baseline_metrics,
    evaluate_model,
    intensity_baseline_metrics,
    label_scores,
    metrics_from_scores,
    select_au_threshold,
)
from .initialization import labels_of_split, load_model_and_processor
from .optimization import make_optimizer, make_scheduler, training_steps
from .pretrain import draw_template, step_generator
from .tracking import MetricsLog, make_accelerator, tracker_config

logger = logging.getLogger(__name__)


class FineTuningModule(nn.Module):
    """The CLEF model with the label side that Table 6's `components` asks for.

    - `"IND"` (CLEF): label names and descriptions through the text encoder; the loss is Eq. 6.
    - `"IN"`: label names only; the loss is Eq. 4 or 5.
    - `"ID"` (the poster's extra row): label descriptions only, in the place of the names. Images meet the description
      embeddings through Eq. 4 or 5 (a description template drawn per batch); there is no Eq. 3. The saved model has
      `config.label_text = "descriptions"`, so its label embeddings are those of the descriptions.
    - `"I"`: no text encoder. The image features meet a learnable `(num_labels, projection_dim)` matrix
      `label_head` instead of name embeddings: a linear classifier on normalised features, trained with the same
      weighted losses and learnable τ. When saved, its normalised rows become the model's `label_embeddings`, so
      the checkpoint predicts exactly like any other CLEF model.
    """

    def __init__(self, model: CLEFModel, components: str):
        super().__init__()
        self.model = model
        self.components = components
        if components == "I":
            num_labels, dim = len(model.config.label_names), model.config.projection_dim
            self.label_head = nn.Parameter(torch.randn(num_labels, dim) * dim**-0.5)
            for module in (model.text_model, model.text_projection):
                module.requires_grad_(False)  # unused: frozen so that data-parallel training does not wait on it

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        class_weights: torch.Tensor | None = None,
        name_input_ids: torch.Tensor | None = None,
        name_attention_mask: torch.Tensor | None = None,
        description_input_ids: torch.Tensor | None = None,
        description_attention_mask: torch.Tensor | None = None,
        intensity_input_ids: torch.Tensor | None = None,
        intensity_attention_mask: torch.Tensor | None = None,
        intensity_labels: torch.Tensor | None = None,
    ) -> CLEFOutput:
        """(batch, 3, size, size) images and (batch, num_labels) or (batch,) labels -> [`CLEFOutput`] with the loss.
        With `--au_intensity` (IN, IND, ID), the intensity prompts' tokens and the (batch, num_labels) intensities
        add Eq. I (see [`CLEFModel.forward`])."""
        if self.components != "I":
            # ID: the descriptions take the names' place as the label side, and there is no Eq. 3.
            label_ids, label_mask = ((description_input_ids, description_attention_mask) if self.components == "ID"
                                     else (name_input_ids, name_attention_mask))
            use_descriptions = self.components == "IND"
            return self.model(
                pixel_values=pixel_values,
                labels=labels,
                class_weights=class_weights,
                name_input_ids=label_ids,
                name_attention_mask=label_mask,
                description_input_ids=description_input_ids if use_descriptions else None,
                description_attention_mask=description_attention_mask if use_descriptions else None,
                intensity_input_ids=intensity_input_ids,
                intensity_attention_mask=intensity_attention_mask,
                intensity_labels=intensity_labels,
            )
        image_embeds = nn.functional.normalize(self.model.get_image_features(pixel_values), dim=-1)
        label_embeds = nn.functional.normalize(self.label_head, dim=-1)
        temperature = self.model.temperature
        loss = None
        if labels is not None:
            if self.model.config.task == "au":
                loss = au_loss(image_embeds, label_embeds, labels, temperature, class_weights)
            else:
                loss = expression_loss(image_embeds, label_embeds, labels, temperature, class_weights)
        return CLEFOutput(loss=loss, logits=image_embeds @ label_embeds.T / temperature, image_embeds=image_embeds,
                          label_embeds=label_embeds, image_name_loss=loss)

    @torch.no_grad()
    def label_embeddings(self, tokenizer) -> torch.Tensor:
        """(num_labels, projection_dim) normalised label embeddings the model predicts with; also stored in the
        model's `label_embeddings` buffer, so that the model saved next predicts the same."""
        if self.components == "I":
            self.model.label_embeddings = nn.functional.normalize(self.label_head.detach(), dim=-1).clone()
            return self.model.label_embeddings
        self.model.config.label_text = "descriptions" if self.components == "ID" else "names"
        return self.model.update_label_embeddings(tokenizer)


def infer_task(split, task: str | None) -> str:
    """`task`, or the only kind of label `split` has."""
    if task is not None:
        if task not in split.column_names:
            raise ValueError(f"--task {task} needs a {task!r} column; the split has {split.column_names}.")
        return task
    present = [column for column in ("au", "expression") if column in split.column_names]
    if len(present) != 1:
        raise ValueError(f"Pass --task au or --task expression: the split has label columns {present or 'none'}.")
    return present[0]


def check_intensity_columns(splits, split_names: list[str | None], task: str) -> None:
    """Raise a ValueError naming the split if `--au_intensity` meets a split without an `au_intensity` column."""
    if task != "au":
        raise ValueError(f"--au_intensity scores AU intensity; the data gives task {task!r}.")
    for name in split_names:
        if name is not None and name in splits and "au_intensity" not in splits[name].column_names:
            raise ValueError(
                f"--au_intensity needs an 'au_intensity' column (0-5 per AU, -1 unknown), but the {name!r} split has "
                f"only {splits[name].column_names}. Builders that provide it: synthfaces, disfa, and bp4d / bp4d_plus "
                "with --dataset_options '{\"au_intensity\": true}' (AUs 6, 10, 12, 14, 17)."
            )


def held_out_splits(splits, args: FineTuningArguments, task: str) -> tuple:
    """`(eval_split, test_split)`: the split that picks the best epoch (and the AU threshold), and the split
    evaluated once at the end (None without `--test_split`), both checked to have images and the task's labels."""
    if args.eval_split not in splits:
        raise ValueError(
            f"--eval_split {args.eval_split!r} is not a split of the data set; it has {sorted(splits)}. Pass "
            "--eval_split to name the split that picks the best epoch and the AU threshold (a validation split, held "
            "out from training and from the test split). A data set with only train and test splits can pass "
            "--eval_split test --test_split '' knowingly: the reported numbers are then those it was selected on."
        )
    eval_split = get_split(splits, args.eval_split, ("image", task), "--eval_split")
    if args.test_split is None:
        return eval_split, None
    if args.test_split == args.eval_split:
        logger.warning("--test_split %r is also --eval_split: its numbers are those the model was selected on.",
                       args.test_split)
    return eval_split, get_split(splits, args.test_split, ("image", task), "--test_split")


def warm_up_label_texts(model: CLEFModel, name_tokens: dict, description_tokens: dict, steps: int, lr: float,
                        intensity_tokens: dict | None = None) -> None:
    """Train the text side alone on Eq. 3 for `steps` steps, at the initial temperature.

    An untrained text encoder maps every label prompt to nearly the same embedding, and the image-name losses then
    barely move; a short warm-up spreads the names apart. With `intensity_tokens` (`--au_intensity`), the intensity
    prompts are spread apart too: each is classified among all of them (Eq. 3's form with the prompts on both
    sides), since "slight" and "extreme lip corner puller" differ by one word and would start as one embedding. Every
    process computes the same update from the same texts, so the copies stay identical without gradient
    synchronisation.
    """
    parameters = [p for name, p in model.named_parameters() if name.startswith(("text_model.", "text_projection."))]
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    for _ in range(steps):
        loss = name_description_loss(
            model.get_text_features(**description_tokens), model.get_text_features(**name_tokens),
            model.config.temperature_init,
        )
        if intensity_tokens is not None:
            phrases = model.get_text_features(**intensity_tokens)
            loss = loss + name_description_loss(phrases, phrases, model.config.temperature_init)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def finetune(args: FineTuningArguments) -> dict:
    """Run stage 2; keep the best epoch's model in `args.best_model_dir`, with its AU threshold, and test it once.

    Returns:
        A dict, also written to `output_dir/all_results.json`:
        - `"history"`: the metrics on `--eval_split` after each epoch (at the initial `config.au_threshold`);
        - `"best_epoch"`, `"best_metric"`, `"best"`: the epoch with the best `BEST_METRIC` there, and its metrics;
        - `"baseline"`: a trivial predictor's metrics on `--eval_split`;
        - `"au_threshold"`: the AU threshold saved with the model (chosen on `--eval_split` with
          `--select_au_threshold`), None for expressions;
        - `"validation"`: the best model's metrics on `--eval_split` at that threshold;
        - `"test"`, `"test_baseline"`: the best model's and the trivial predictor's metrics on `--test_split`,
          computed once, after training (None without a test split);
        - `"eval_split"`, `"test_split"`, `"task"`, `"objective"`, `"components"`, `"global_step"`,
          `"class_weights"`, `"best_model_dir"`;
        - with `--au_intensity`, `"au_intensity": True` and `"intensity_baseline"` / `"test_intensity_baseline"`:
          the trivial intensity predictor (each AU's training mean) on `--eval_split` / `--test_split`; the model's
          intensity metrics are the `intensity_*` entries of the metrics above, and `"best_metric"` is
          `intensity_mean_icc`.
    """
    # 1. Devices, precision, trackers; seeding.
    cl_ile = args.objective == "cl_ile"
    accelerator = make_accelerator(args, find_unused_parameters=cl_ile)  # each CL-ILE stage trains half the module
    set_seed(args.seed)

    # 2. Data: training and held-out splits, the label set and the class weights of Eq. 4-5.
    with accelerator.main_process_first():
        splits = load_splits(args)
    probe = get_split(splits, args.train_split, ("image",), "--train_split")
    task = infer_task(probe, args.task)
    if cl_ile and task != "au":
        raise ValueError(f"--objective cl_ile detects AUs; the data gives task {task!r}.")
    if args.au_intensity:
        check_intensity_columns(splits, [args.train_split, args.eval_split, args.test_split], task)
    label_columns = (task, "au_intensity") if args.au_intensity else (task,)
    train_split = get_split(splits, args.train_split, ("image", task, "subject") if cl_ile else ("image", *label_columns),
                            "--train_split")
    subjects = sorted(set(train_split["subject"])) if cl_ile else []  # CL-ILE: one set of ILEs per subject
    eval_split, test_split = held_out_splits(splits, args, task)
    labels = labels_of_split(train_split, task)
    class_weights = class_weights_from_split(train_split, task, len(labels["label_names"]))

    # 3. Model, label prompts, data loaders, optimizer, schedule.
    model, processor = load_model_and_processor(
        args.model_name_or_path, args.config_file, task=task, labels=labels, class_weights=class_weights,
        au_intensity=args.au_intensity,
    )
    if args.au_intensity:
        model.config.intensity_loss_weight = args.intensity_loss_weight
    if args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    config = model.config
    if args.cache_pixel_values:  # every image through the processor once, not once per epoch (the same pixels)
        with accelerator.main_process_first():
            train_split, eval_split = (with_pixel_values(split, processor.image_processor, num_proc=args.num_proc)
                                       for split in (train_split, eval_split))
            if test_split is not None:
                test_split = with_pixel_values(test_split, processor.image_processor, num_proc=args.num_proc)

    def tokens(texts: list[str]) -> dict[str, torch.Tensor]:
        encoded = processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                                      max_length=config.text_config.max_position_embeddings)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    name_tokens = tokens(fill_template(config.name_template, config.label_names))
    description_tokens = [tokens(fill_template(t, config.label_descriptions)) for t in config.description_templates]
    intensity_inputs = {}
    if args.au_intensity:
        intensity_inputs = {f"intensity_{key}": value for key, value in tokens(model.intensity_prompts()).items()}

    sampler = EpochSeededSampler(len(train_split), args.seed)
    collator = FacialBehaviorCollator(processor.image_processor, label_columns)
    train_collator = FacialBehaviorCollator(processor.image_processor, (task, "subject"), {"subject": subjects}) \
        if cl_ile else collator
    train_dataloader = DataLoader(train_split, batch_size=args.per_device_train_batch_size, sampler=sampler,
                                  collate_fn=train_collator, num_workers=args.dataloader_num_workers)
    eval_dataloader = DataLoader(eval_split, batch_size=args.per_device_eval_batch_size, collate_fn=collator,
                                 num_workers=args.dataloader_num_workers)
    if cl_ile:
        module = CLILEModule(
            model, len(subjects), args.cl_ile_identity_bce_weight, args.cl_ile_bce_weight,
            args.cl_ile_orthogonality_weight, args.cl_ile_contrastive_weight, args.cl_ile_temperature,
            args.cl_ile_orthogonality_floor,
        )
    else:
        module = FineTuningModule(model, args.components)
    optimizer = make_optimizer(module, args)
    module, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        module, optimizer, train_dataloader, eval_dataloader
    )
    updates_per_epoch, total_updates, warmup_updates = training_steps(args, len(train_dataloader))
    stages = None
    if cl_ile:  # the steps of stage I, then of stage II
        if total_updates < 2:
            raise ValueError(f"--objective cl_ile needs at least 2 optimizer steps (one per stage), got {total_updates}.")
        stage_one_updates = min(total_updates - 1, max(1, round(args.cl_ile_stage_one_fraction * total_updates)))
        stages = (stage_one_updates, total_updates - stage_one_updates)
    scheduler = make_scheduler(optimizer, args, total_updates, warmup_updates, stages)
    accelerator.register_for_checkpointing(scheduler)
    num_epochs = math.ceil(total_updates / updates_per_epoch)
    device = accelerator.device
    weights = torch.tensor(class_weights, device=device)
    name_inputs = {f"name_{key}": value.to(device) for key, value in name_tokens.items()}
    intensity_inputs = {key: value.to(device) for key, value in intensity_inputs.items()}

    # 4. Resume where an interrupted run stopped; otherwise warm up the label texts if asked.
    loop_state = {"global_step": 0, "epoch": 0, "batches_done": 0, "running_loss": 0.0, "running_count": 0,
                  "best_metric": None, "best_epoch": None, "history": []}
    checkpoint = resolve_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if checkpoint is not None:
        loop_state = load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"Resumed from {checkpoint} at step {loop_state['global_step']}.")
    elif args.text_warmup_steps and args.components in ("IN", "IND") and not cl_ile:  # Eq. 3 needs the names
        warm_up_label_texts(
            accelerator.unwrap_model(module).model,
            {k: v.to(device) for k, v in name_tokens.items()},
            {k: v.to(device) for k, v in description_tokens[0].items()},
            args.text_warmup_steps, args.learning_rate,
            {key[len("intensity_"):]: value for key, value in intensity_inputs.items()} if args.au_intensity else None,
        )
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("clef_finetuning", config=tracker_config(args))
    metrics_log = MetricsLog(accelerator, args.output_dir, resume_step=loop_state["global_step"] if checkpoint else None)
    best_key = INTENSITY_BEST_METRIC if args.au_intensity else BEST_METRIC[task]

    def end_of_epoch(epoch: int) -> None:
        """Evaluate, log, and keep the model if it is the best so far (CL-ILE: from its stage II on)."""
        if stages is not None and loop_state["global_step"] <= stages[0]:
            return  # the general encoder has not been trained yet
        unwrapped = accelerator.unwrap_model(module)
        metrics = evaluate_model(accelerator, unwrapped.model, eval_dataloader, task,
                                 unwrapped.label_embeddings(processor.tokenizer))
        metrics_log.log({f"eval/{key}": value for key, value in metrics.items() if isinstance(value, (int, float))},
                        loop_state["global_step"])
        loop_state["history"].append({"epoch": epoch, "step": loop_state["global_step"], **metrics})
        accelerator.print(f"epoch {epoch}: {best_key} {metrics[best_key]:.4f}")
        if loop_state["best_metric"] is None or metrics[best_key] > loop_state["best_metric"]:
            loop_state["best_metric"], loop_state["best_epoch"] = metrics[best_key], epoch
            save_best(accelerator, module, processor, args, metrics, epoch)

    # 5. The loop.
    progress = tqdm(total=total_updates, initial=loop_state["global_step"], desc=f"fine-tuning ({task})",
                    disable=not accelerator.is_local_main_process)
    module.train()
    grad_norm = None
    while loop_state["global_step"] < total_updates and loop_state["epoch"] < num_epochs:
        epoch = loop_state["epoch"]
        for batch in epoch_batches(accelerator, train_dataloader, sampler, epoch, loop_state["batches_done"]):
            micro_step = epoch * len(train_dataloader) + loop_state["batches_done"]
            with accelerator.accumulate(module):
                generator = step_generator(args.seed, micro_step, accelerator.process_index)
                pixel_values = augment_images(batch["pixel_values"], generator, args.augmentation)
                if cl_ile:
                    stage = 1 if loop_state["global_step"] < stages[0] else 2
                    output = module(pixel_values=pixel_values, labels=batch[task], subject_ids=batch["subject"],
                                    stage=stage)
                else:
                    descriptions = description_tokens[draw_template(args.seed, micro_step, len(description_tokens))]
                    output = module(
                        pixel_values=pixel_values,
                        labels=batch[task],
                        class_weights=weights,
                        **name_inputs,
                        description_input_ids=descriptions["input_ids"].to(device),
                        description_attention_mask=descriptions["attention_mask"].to(device),
                        **intensity_inputs,
                        **({"intensity_labels": batch["au_intensity"]} if args.au_intensity else {}),
                    )
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    grad_norm = accelerator.clip_grad_norm_(module.parameters(), args.max_grad_norm).item()
                optimizer.step()
                optimizer.zero_grad()

            loop_state["batches_done"] += 1
            loop_state["running_loss"] += output.loss.item()
            loop_state["running_count"] += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            loop_state["global_step"] += 1
            progress.update(1)
            step = loop_state["global_step"]
            if step % args.logging_steps == 0 or step == total_updates:
                metrics_log.log_training_window(
                    loop_state, step, scheduler.get_last_lr()[0], epoch, grad_norm, progress,
                    temperature=None if cl_ile else accelerator.unwrap_model(module).model.temperature.item(),
                )
            if step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, args.output_dir, loop_state, args.checkpoints_total_limit)
            if step >= total_updates:
                break
        else:
            end_of_epoch(epoch)
            loop_state["epoch"] += 1
            loop_state["batches_done"] = 0
    if not loop_state["history"] or loop_state["history"][-1]["step"] != loop_state["global_step"]:
        end_of_epoch(loop_state["epoch"])  # the run stopped inside an epoch (max_steps): evaluate where it ended
    save_checkpoint(accelerator, args.output_dir, loop_state, args.checkpoints_total_limit)  # the finished state
    progress.close()

    # 6. The best model: its AU threshold chosen on the eval split, then the test split, once.
    final = finish_best_model(accelerator, args, task, processor, eval_dataloader, test_split, collator,
                              loop_state["best_epoch"])
    if final["test"] is not None:
        metrics_log.log({f"test/{key}": value for key, value in final["test"].items()
                         if isinstance(value, (int, float))}, loop_state["global_step"])

    # 7. Results.
    best = next(entry for entry in loop_state["history"] if entry["epoch"] == loop_state["best_epoch"])
    label_ids = list(labels["label_ids"])
    results = {
        "baseline": baseline_metrics(train_split, eval_split, task, label_ids),
        "task": task, "objective": args.objective, "components": None if cl_ile else args.components,
        "global_step": loop_state["global_step"],
        "eval_split": args.eval_split, "test_split": args.test_split,
        "best_epoch": loop_state["best_epoch"], "best_metric": loop_state["best_metric"], "best": best,
        "history": loop_state["history"],
        "au_threshold": final["au_threshold"], "test_time_flip": final["test_time_flip"],
        "validation": final["validation"], "test": final["test"],
        "test_baseline": None if test_split is None else baseline_metrics(train_split, test_split, task, label_ids),
        "class_weights": class_weights, "best_model_dir": args.best_model_dir,
    }
    if args.au_intensity:
        results.update(
            au_intensity=True,
            intensity_baseline=intensity_baseline_metrics(train_split, eval_split, label_ids),
            test_intensity_baseline=None if test_split is None else
            intensity_baseline_metrics(train_split, test_split, label_ids),
        )
    if accelerator.is_main_process:
        with open(os.path.join(args.output_dir, "all_results.json"), "w") as file:
            json.dump(results, file, indent=1)
    accelerator.end_training()
    return results


def write_model_folder(folder: str, model: CLEFModel, processor, args: FineTuningArguments, eval_results: dict) -> None:
    """The Hub-ready folder of a fine-tuned model: weights and config, processor, `training_args.json` and
    `eval_results.json`."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    with open(os.path.join(folder, "training_args.json"), "w") as file:
        json.dump(args.to_dict(), file, indent=1)
    with open(os.path.join(folder, "eval_results.json"), "w") as file:
        json.dump(eval_results, file, indent=1)


def save_best(
    accelerator: Accelerator, module: FineTuningModule, processor, args: FineTuningArguments, metrics: dict, epoch: int
) -> None:
    """Save the model (label embeddings computed), its processor, the training arguments and the metrics to
    `args.best_model_dir`, atomically."""
    unwrapped = accelerator.unwrap_model(module)
    unwrapped.label_embeddings(processor.tokenizer)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    eval_results = {"epoch": epoch, "split": args.eval_split, "dataset": args.dataset_name, **metrics}
    save_directory_atomically(
        args.best_model_dir, lambda folder: write_model_folder(folder, unwrapped.model, processor, args, eval_results)
    )


def finish_best_model(
    accelerator: Accelerator,
    args: FineTuningArguments,
    task: str,
    processor,
    eval_dataloader: DataLoader,
    test_split,
    collator: FacialBehaviorCollator,
    best_epoch: int,
) -> dict:
    """Reload the best epoch's model from `args.best_model_dir`; for AUs with `args.select_au_threshold`, choose its
    threshold on the eval split ([`select_au_threshold`]), and with `args.select_test_time_flip` whether it mirrors
    images at inference (`config.test_time_flip`, the better of the two ways on the eval split); evaluate the test
    split once; save the model again with these choices in its config and the test metrics (the eval split's
    without a test split) in `eval_results.json`.

    Returns:
        `{"au_threshold" (None for expressions), "test_time_flip", "validation" (the eval split's metrics with these
        choices), "test" (None without a test split)}`.
    """
    accelerator.wait_for_everyone()  # the main process has written the folder
    if not os.path.isfile(os.path.join(args.best_model_dir, "config.json")):
        raise FileNotFoundError(
            f"--best_model_dir {args.best_model_dir} holds no model, but the best epoch ({best_epoch}) was saved there: "
            "a resumed run needs the best model its interrupted run left (keep --output_dir and --best_model_dir)."
        )
    model = CLEFModel.from_pretrained(args.best_model_dir).to(accelerator.device).eval()
    label_embeds = model._stored_label_embeddings()
    key = BEST_METRIC[task]
    best = None
    for flip in (False, True) if args.select_test_time_flip else (model.config.test_time_flip,):
        scores = label_scores(accelerator, model, eval_dataloader, task, label_embeds, test_time_flip=flip)
        threshold = model.config.au_threshold
        if task == "au" and args.select_au_threshold:
            threshold, metrics = select_au_threshold(scores)
        else:
            metrics = metrics_from_scores(scores, task, threshold)
        if best is None or metrics[key] > best[2][key]:  # ties keep the single pass
            best = (flip, threshold, metrics)
    model.config.test_time_flip, model.config.au_threshold, validation = best
    test = None
    if test_split is not None:
        test_dataloader = accelerator.prepare_data_loader(DataLoader(
            test_split, batch_size=args.per_device_eval_batch_size, collate_fn=collator,
            num_workers=args.dataloader_num_workers))
        test = evaluate_model(accelerator, model, test_dataloader, task, label_embeds,
                              labels_of_split(test_split, task)["label_ids"])
    au_threshold = model.config.au_threshold if task == "au" else None
    eval_results = {"epoch": best_epoch, "split": args.test_split or args.eval_split, "dataset": args.dataset_name,
                    "selection_split": args.eval_split, "au_threshold": au_threshold,
                    "test_time_flip": model.config.test_time_flip, **(test or validation)}
    if accelerator.is_main_process:
        save_directory_atomically(
            args.best_model_dir, lambda folder: write_model_folder(folder, model, processor, args, eval_results)
        )
    accelerator.wait_for_everyone()
    return {"au_threshold": au_threshold, "test_time_flip": model.config.test_time_flip, "validation": validation,
            "test": test}


__all__ = [
    "BEST_METRIC",
    "FineTuningModule",
    "finetune",
    "finish_best_model",
    "check_intensity_columns",
    "held_out_splits",
    "infer_task",
    "warm_up_label_texts",
    "write_model_folder",
]

"""The stage-0 sweep of docs/diagnosis.md (sections 9, 11 and 13): how stage 0's data, batch and rate move stage 2.

Each row runs stage 0 (`pretrain` with `pretraining_losses="image_text"`, the demo model from random init, the demo
recipe) on captioned faces of subjects 1000 and up, then fine-tunes the image-only head (I) for AUs and for
expressions from it (10 epochs by default, the demo's budget) on the demo's split (28 subjects: 20 train,
4 validation, 4 test). The row the demo uses was chosen by its validation figures; the test figures are printed
beside them because they were read, and were not used to choose. One torch thread per run; two rows side by side
take about 8 minutes on 2 cores.

    python benchmarks/stage0_sweep.py --rows bs64-2400x1-2000-lr5e-4 --output stage0_sweep.json
"""

import argparse
import json
import os
import tempfile
import time

import torch

from clef_hf.training.arguments import FineTuningArguments, PretrainingArguments
from clef_hf.training.finetune import finetune
from clef_hf.training.pretrain import pretrain
from clef_hf.training.recipes import SYNTHFACES_FINETUNING, SYNTHFACES_MODEL_CONFIG, SYNTHFACES_RECIPE

#: Row name -> (stage-0 optimizer steps, batch size, subjects, frames per activity[, learning rate[, more options of
#: the stage-0 data set]]); the first five
#: rows and every 2000-step row see 19,200 faces; without a rate a row uses the recipe's (`SYNTHFACES_RECIPE`, 1e-3).
ROWS = {
    "bs32-150x16": (4000, 32, 150, 16),
    "bs32-300x8": (4000, 32, 300, 8),
    "bs64-150x16": (2500, 64, 150, 16),
    "bs64-300x8": (2500, 64, 300, 8),  # section 9's choice
    "bs128-150x16": (1250, 128, 150, 16),
    "bs64-300x8-1500": (1500, 64, 300, 8),  # the same faces, 60% of the steps
    "bs64-300x8-2000": (2000, 64, 300, 8),  # after the 15-minute cut (section 9)
    "bs64-300x8-2000-lr5e-4": (2000, 64, 300, 8, 5e-4),
    "bs64-300x8-2000-lr2e-3": (2000, 64, 300, 8, 2e-3),
    "bs64-300x8-2000-lr2.5e-4": (2000, 64, 300, 8, 2.5e-4),
    "bs64-300x8-2000-lr1.25e-4": (2000, 64, 300, 8, 1.25e-4),
    "bs64-600x4-2000-lr5e-4": (2000, 64, 600, 4, 5e-4),  # the same face count, twice the identities
    "bs64-1200x2-2000-lr5e-4": (2000, 64, 1200, 2, 5e-4),
    "bs64-2400x1-2000-lr5e-4": (2000, 64, 2400, 1, 5e-4),  # the demo's stage 0 (MainJobOptions, section 13)
    "bs64-2400x1-2000-lr1e-3": (2000, 64, 2400, 1, 1e-3),
    "bs64-2400x1-2000-lr2.5e-4": (2000, 64, 2400, 1, 2.5e-4),
    # Captions that name every movement (the demo's name at most 4, brows and eyes first, so the mouth goes first):
    "bs64-2400x1-2000-lr5e-4-all-movements": (2000, 64, 2400, 1, 5e-4, {"caption_movements": 8}),
}
DATA = {"num_subjects": 28, "num_validation_subjects": 4, "num_test_subjects": 4, "frames_per_activity": 16, "seed": 0}


def run_row(name: str, work_dir: str, cache_dir: str, finetuning_epochs: list[float]) -> dict:
    """Stage 0 of row `name` (read back when `work_dir/name/stage0/model` holds a finished one, e.g. the demo's
    `outputs/demo/stage0` linked there), then the I head for both tasks at each of `finetuning_epochs`."""
    steps, batch, subjects, frames, *rest = ROWS[name]
    rate, data_options = (rest + [None, {}])[:2]
    recipe = {**SYNTHFACES_RECIPE, **({"learning_rate": rate} if rate else {})}
    started = time.perf_counter()
    stage0_dir = os.path.join(work_dir, name, "stage0")
    model_dir = os.path.join(stage0_dir, "model")
    if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
        model_dir = pretrain(PretrainingArguments(
            output_dir=stage0_dir, dataset="synthfaces",
            dataset_options=json.dumps({"first_subject": 1000, "num_subjects": subjects, "num_test_subjects": 0,
                                        "frames_per_activity": frames, "seed": 0, **data_options}),
            cache_dir=cache_dir, num_proc=1, num_train_epochs=1.0, max_steps=steps,
            pretraining_losses="image_text", config_file=SYNTHFACES_MODEL_CONFIG, report_to="none",
            **{**recipe, "per_device_train_batch_size": batch, "seed": 0, "logging_steps": 100,
               "checkpointing_steps": 10**6},
        ))["model_dir"]
    row = {"row": name, "steps": steps, "batch": batch, "learning_rate": recipe["learning_rate"], "subjects": subjects, "frames_per_activity": frames,
           "stage0_seconds": round(time.perf_counter() - started, 1)}
    for epochs in finetuning_epochs:
        for task, key in (("au", "mean_f1"), ("expression", "accuracy")):
            result = finetune(FineTuningArguments(
                output_dir=os.path.join(work_dir, name, f"{task}-{epochs:g}"), task=task, components="I",
                model_name_or_path=model_dir, dataset="synthfaces", dataset_options=json.dumps(DATA),
                cache_dir=cache_dir, num_proc=1, num_train_epochs=epochs, eval_split="validation",
                test_split="test", report_to="none",
                **{**SYNTHFACES_FINETUNING, **SYNTHFACES_RECIPE, "seed": 0, "logging_steps": 50,
                   "checkpointing_steps": 10**6},
            ))
            row[f"{task}-{epochs:g}-epochs"] = {"validation": result["validation"][key], "test": result["test"][key]}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--work_dir", default=None, help="where runs go (default: a temporary folder)")
    parser.add_argument("--cache_dir", default=None, help="the data cache (default: WORK_DIR/data); the demo's, "
                        "outputs/demo/data, holds both data sets already")
    parser.add_argument("--finetuning_epochs", nargs="+", type=float, default=[10.0],
                        help="stage-2 budgets to fine-tune each stage 0 with (the demo's is MainJobOptions')")
    parser.add_argument("--output", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        work_dir = args.work_dir or scratch
        cache_dir = args.cache_dir or os.path.join(work_dir, "data")
        rows = [run_row(name, work_dir, cache_dir, args.finetuning_epochs) for name in args.rows]
    for row in rows:
        print(json.dumps(row))
    if args.output:
        with open(args.output, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()

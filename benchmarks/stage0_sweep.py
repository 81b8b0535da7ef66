"""The stage-0 sweep of docs/diagnosis.md (section 9): how stage 0's data and batch move stage 2.

Each row runs stage 0 (`pretrain` with `pretraining_losses="image_text"`, the demo model from random init, the demo
recipe) on captioned faces of subjects 1000 and up, then fine-tunes the image-only head (I) for AUs and for
expressions from it with the demo's stage-2 budget (10 epochs, 800 steps) on the demo's split (28 subjects: 20 train,
4 validation, 4 test). The row the demo uses was chosen by its validation figures; the test figures are printed
beside them because they were read, and were not used to choose. One torch thread per run; two rows side by side
take about 8 minutes on 2 cores.

    python benchmarks/stage0_sweep.py --rows bs64-300x8 --output stage0_sweep.json
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

#: Row name -> (stage-0 optimizer steps, batch size, subjects, frames per activity); every row sees 19,200 faces.
ROWS = {
    "bs32-150x16": (4000, 32, 150, 16),
    "bs32-300x8": (4000, 32, 300, 8),
    "bs64-150x16": (2500, 64, 150, 16),
    "bs64-300x8": (2500, 64, 300, 8),  # the demo's stage 0 (MainJobOptions)
    "bs128-150x16": (1250, 128, 150, 16),
}
DATA = {"num_subjects": 28, "num_validation_subjects": 4, "num_test_subjects": 4, "frames_per_activity": 16, "seed": 0}


def run_row(name: str, work_dir: str) -> dict:
    steps, batch, subjects, frames = ROWS[name]
    started = time.perf_counter()
    stage0 = pretrain(PretrainingArguments(
        output_dir=os.path.join(work_dir, name, "stage0"), dataset="synthfaces",
        dataset_options=json.dumps({"first_subject": 1000, "num_subjects": subjects, "num_test_subjects": 0,
                                    "frames_per_activity": frames, "seed": 0}),
        cache_dir=os.path.join(work_dir, "data"), num_proc=1, num_train_epochs=1.0, max_steps=steps,
        pretraining_losses="image_text", config_file=SYNTHFACES_MODEL_CONFIG, report_to="none",
        **{**SYNTHFACES_RECIPE, "per_device_train_batch_size": batch, "seed": 0, "logging_steps": 100,
           "checkpointing_steps": 10**6},
    ))
    row = {"row": name, "steps": steps, "batch": batch, "subjects": subjects, "frames_per_activity": frames,
           "stage0_seconds": round(time.perf_counter() - started, 1)}
    for task, key in (("au", "mean_f1"), ("expression", "accuracy")):
        result = finetune(FineTuningArguments(
            output_dir=os.path.join(work_dir, name, task), task=task, components="I",
            model_name_or_path=stage0["model_dir"], dataset="synthfaces", dataset_options=json.dumps(DATA),
            cache_dir=os.path.join(work_dir, "data"), num_proc=1, num_train_epochs=10, eval_split="validation",
            test_split="test", report_to="none",
            **{**SYNTHFACES_FINETUNING, **SYNTHFACES_RECIPE, "seed": 0, "logging_steps": 50,
               "checkpointing_steps": 10**6},
        ))
        row[task] = {"validation": result["validation"][key], "test": result["test"][key]}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--work_dir", default=None, help="where runs and data go (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        rows = [run_row(name, args.work_dir or scratch) for name in args.rows]
    for row in rows:
        print(json.dumps(row))
    if args.output:
        with open(args.output, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()

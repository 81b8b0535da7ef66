"""Stage 2's recipe from a pre-trained start (docs/diagnosis.md, section 10): the demo's stage-0 model fine-tuned with
one change per row, the demo's data, budget and head; validation and test figures (the choice reads validation only).

Needs `make demo`'s outputs (its stage 0 and data cache). One torch thread; 30-45 s per row and task on one core.

    python benchmarks/stage2_recipes.py --rows demo layer-decay-0.6 --tasks au expression --output rows.json
"""

import argparse
import json
import os
import tempfile
import time

import torch

from clef_hf.training.arguments import FineTuningArguments
from clef_hf.training.finetune import finetune
from clef_hf.training.main_job import MainJobOptions
from clef_hf.training.recipes import SYNTHFACES_FINETUNING, SYNTHFACES_RECIPE

#: Row name -> changes to the demo's stage-2 options.
ROWS = {
    "demo": {},
    "lr-5e-4": {"learning_rate": 5e-4},
    "lr-2e-3": {"learning_rate": 2e-3},
    "layer-decay-0.8": {"layer_decay": 0.8},
    "layer-decay-0.6": {"layer_decay": 0.6},
    "warmup-0.5": {"warmup_epochs": 0.5},
    "no-text-warmup": {"text_warmup_steps": 0},
    "weight-decay-0.2": {"weight_decay": 0.2},
    "no-colour-jitter": {"color_jitter": 0.0},
}


def run_row(name: str, task: str, components: str, demo_dir: str, work_dir: str, start: str, epochs: float) -> dict:
    options = MainJobOptions(output_dir=demo_dir)
    started = time.perf_counter()
    result = finetune(FineTuningArguments(
        output_dir=os.path.join(work_dir, f"{task}-{components}-{name}"), task=task, components=components,
        dataset="synthfaces", dataset_options=json.dumps(options.data_options),
        cache_dir=os.path.join(demo_dir, "data"), num_proc=1, num_train_epochs=epochs,
        eval_split="validation", test_split="test", model_name_or_path=os.path.join(demo_dir, start, "model"),
        report_to="none",
        **{**SYNTHFACES_FINETUNING, **SYNTHFACES_RECIPE, "seed": options.seed, "logging_steps": 50,
           "checkpointing_steps": 10**6, **ROWS[name]},
    ))
    key = "mean_f1" if task == "au" else "accuracy"
    return {"row": name, "task": task, "components": components, "start": start,
            "validation": round(result["validation"][key], 4), "test": round(result["test"][key], 4),
            "best_epoch": result["best_epoch"], "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--tasks", nargs="+", default=["au", "expression"], choices=["au", "expression"])
    parser.add_argument("--components", default="I", choices=["I", "IN", "IND"])
    parser.add_argument("--start", default="stage0", help="the demo's pre-trained model: stage0 or stage1")
    parser.add_argument("--demo_dir", default="outputs/demo", help="the demo's output folder")
    parser.add_argument("--finetuning_epochs", type=float, default=MainJobOptions.finetuning_epochs,
                        help="stage-2 epochs per row (the demo's; docs/diagnosis.md sections 10 and 12 used 6)")
    parser.add_argument("--output", default=None, help="also write the rows here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        for name in args.rows:
            for task in args.tasks:
                rows.append(run_row(name, task, args.components, args.demo_dir, work_dir, args.start,
                                    args.finetuning_epochs))
                print(json.dumps(rows[-1]), flush=True)
    if args.output:
        with open(args.output, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()

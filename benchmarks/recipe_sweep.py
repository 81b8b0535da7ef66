"""The recipe sweeps of docs/diagnosis.md (second round): stage 2 on synthfaces with one recipe change per row.

Every row is `clef_hf.training.finetune.finetune` on 28 subjects (20 train, 4 validation, 4 test), seed 0, the demo
model from random init and the recipe of `clef_hf/training/recipes.py` with the row's changes; the epoch (and the AU
threshold) is chosen on validation and the test subjects are read once. One torch thread, so the figures do not
depend on the machine's core count. About a minute per row on one core.

    python benchmarks/recipe_sweep.py --rows old-recipe new-recipe --task expression --output sweep.json
"""

import argparse
import json
import os
import tempfile
import time

import torch

from clef_hf.training.arguments import FineTuningArguments
from clef_hf.training.finetune import finetune
from clef_hf.training.recipes import SYNTHFACES_FINETUNING, SYNTHFACES_MODEL_CONFIG, SYNTHFACES_RECIPE

#: Row name -> changes to the recipe (the current one: `new-recipe`).
ROWS = {
    "new-recipe": {},
    "old-recipe": {"text_learning_rate_factor": 3.0, "max_grad_norm": 1.0},
    "old-recipe-image-only": {"text_learning_rate_factor": 3.0, "max_grad_norm": 1.0, "components": "I"},
    "no-clipping-text-3x": {"text_learning_rate_factor": 3.0},
    "clipping-text-1x": {"max_grad_norm": 1.0},
    "learning-rate-2e-3": {"learning_rate": 2e-3},
    "batch-16": {"per_device_train_batch_size": 16},
    "no-colour-jitter": {"color_jitter": 0.0},
    "30-epochs": {"num_train_epochs": 30.0},
}
DATA = {"num_subjects": 28, "num_validation_subjects": 4, "num_test_subjects": 4, "frames_per_activity": 16, "seed": 0}


def run_row(name: str, task: str, epochs: float, work_dir: str) -> dict:
    changes = dict(ROWS[name])
    components = changes.pop("components", "IND")
    started = time.perf_counter()
    result = finetune(FineTuningArguments(
        output_dir=os.path.join(work_dir, f"{task}-{name}"), task=task, components=components, dataset="synthfaces",
        dataset_options=json.dumps(DATA), cache_dir=os.path.join(work_dir, "data"), num_proc=1,
        eval_split="validation", test_split="test", config_file=SYNTHFACES_MODEL_CONFIG, report_to="none",
        **{**SYNTHFACES_FINETUNING, **SYNTHFACES_RECIPE, "num_train_epochs": epochs, "seed": 0, "logging_steps": 50,
           "checkpointing_steps": 10**6, **changes},
    ))
    key = "mean_f1" if task == "au" else "accuracy"
    return {"row": name, "task": task, "components": components, "validation": result["validation"][key],
            "test": result["test"][key], "best_epoch": result["best_epoch"],
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--task", choices=["au", "expression"], default="expression")
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--work_dir", default=None, help="where runs and data go (default: a temporary folder)")
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        rows = [run_row(name, args.task, args.epochs, args.work_dir or scratch) for name in args.rows]
    for row in rows:
        print(f"{row['task']:<11}{row['row']:<24}validation {row['validation']:.3f}  test {row['test']:.3f}  "
              f"(epoch {row['best_epoch']}, {row['seconds']:.0f} s)")
    if args.output:
        with open(args.output, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()

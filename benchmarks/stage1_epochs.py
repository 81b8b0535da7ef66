"""Stage 1's budget (docs/diagnosis.md, section 9): stage 1 (Eq. 2, activities) for N epochs from the demo's stage 0,
then the image-only head (I) for AUs and expressions with the demo's stage-2 budget; validation and test figures.

Needs `make demo`'s outputs (its stage 0 and data cache). One torch thread; about 2 minutes for 8 epochs.

    python benchmarks/stage1_epochs.py --epochs 2     # the demo's: its stage 0 + 1 -> stage 2 (I) rows exactly
    python benchmarks/stage1_epochs.py --epochs 8     # loss 7.53; AU val 0.691, expression val 0.609
"""

import argparse
import json
import os
import tempfile

import torch

from clef_hf.training.arguments import FineTuningArguments, PretrainingArguments
from clef_hf.training.finetune import finetune
from clef_hf.training.main_job import MainJobOptions, _read_training_losses
from clef_hf.training.pretrain import pretrain
from clef_hf.training.recipes import SYNTHFACES_FINETUNING, SYNTHFACES_RECIPE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=float, default=8.0, help="stage-1 epochs")
    parser.add_argument("--learning_rate", type=float, default=SYNTHFACES_RECIPE["learning_rate"],
                        help="stage 1's peak rate (the demo's: the recipe's)")
    parser.add_argument("--demo_dir", default="outputs/demo", help="the demo's output folder")
    parser.add_argument("--finetuning_epochs", type=float, default=MainJobOptions.finetuning_epochs,
                        help="stage-2 epochs (the demo's; docs/diagnosis.md sections 9, 11 and 13 used 6)")
    parser.add_argument("--stage0_model", default=None,
                        help="the stage-0 model stage 1 starts from (default: the demo's, DEMO_DIR/stage0/model)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = MainJobOptions(output_dir=args.demo_dir)
    cache_dir = os.path.join(args.demo_dir, "data")
    common = {**SYNTHFACES_RECIPE, "seed": options.seed, "logging_steps": 20, "checkpointing_steps": 10**6}
    with tempfile.TemporaryDirectory() as work_dir:
        stage1 = pretrain(PretrainingArguments(
            output_dir=os.path.join(work_dir, "stage1"), dataset="synthfaces",
            dataset_options=json.dumps(options.data_options), cache_dir=cache_dir, num_proc=1,
            num_train_epochs=args.epochs,
            model_name_or_path=args.stage0_model or os.path.join(args.demo_dir, "stage0", "model"),
            report_to="none", **{**common, "learning_rate": args.learning_rate}))
        row = {"stage1_epochs": args.epochs, "stage1_learning_rate": args.learning_rate,
               "stage1_losses": _read_training_losses(os.path.join(work_dir, "stage1"))}
        for task, key in (("au", "mean_f1"), ("expression", "accuracy")):
            result = finetune(FineTuningArguments(
                output_dir=os.path.join(work_dir, task), task=task, components="I",
                model_name_or_path=stage1["model_dir"], dataset="synthfaces",
                dataset_options=json.dumps(options.data_options), cache_dir=cache_dir, num_proc=1,
                num_train_epochs=args.finetuning_epochs, eval_split="validation", test_split="test",
                report_to="none", **SYNTHFACES_FINETUNING, **common))
            row[task] = {"validation": result["validation"][key], "test": result["test"][key]}
    print(json.dumps(row))


if __name__ == "__main__":
    main()

"""The classical reference rows on the synthetic faces: logistic regression on grey pixels and on HOG, for AUs (mean
F1) and expressions (accuracy), next to the trivial baseline, on subjects none of them has seen.

Splits (subject-exclusive): the builder's `test` split (the last `--num_test_subjects` subjects) is the test set; the
last `--num_validation_subjects` subjects of its `train` split are held out as the validation set, on which C is
chosen; the others train. With the defaults: train S001-S010, validation S011-S012, test S013-S016, 64 px.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/classical_references.py \
        --output benchmarks/results/classical_references.json
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository, for clef_hf

from benchmark_report import write_report  # noqa: E402

from clef_hf.training.initialization import labels_of_split  # noqa: E402
from clef_hf.training.references import classical_references  # noqa: E402
from dataset_builders import build_dataset  # noqa: E402


def subject_splits(options: argparse.Namespace) -> dict:
    """`{"train", "validation", "test"}`: the builder's splits, its train split cut by subject."""
    splits = build_dataset("synthfaces", cache_dir=options.cache_dir, num_subjects=options.num_subjects,
                           num_test_subjects=options.num_test_subjects, frames_per_activity=options.frames_per_activity,
                           image_size=options.image_size, seed=options.seed)
    subjects = sorted(set(splits["train"]["subject"]))
    if not 0 < options.num_validation_subjects < len(subjects):
        raise ValueError(f"--num_validation_subjects must leave training subjects: the train split has "
                         f"{len(subjects)}, got {options.num_validation_subjects}.")
    held_out = set(subjects[-options.num_validation_subjects:])
    return {
        "train": splits["train"].filter(lambda subject: subject not in held_out, input_columns="subject"),
        "validation": splits["train"].filter(lambda subject: subject in held_out, input_columns="subject"),
        "test": splits["test"],
    }


def format_table(results: dict) -> str:
    """A Markdown table: one line per task and row, with the chosen C, validation and test metrics."""
    lines = ["| task | method | C | validation | test |", "|---|---|---|---|---|"]
    for task, result in results.items():
        key = result["selection_metric"]
        lines.append(f"| {task} | trivial baseline | | | {result['test_baseline'][key]:.3f} |")
        for name, row in result["rows"].items():
            lines.append(f"| {task} | {name} | {row['C']:g} | {row['validation'][key]:.3f} | {row['test'][key]:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_subjects", type=int, default=16)
    parser.add_argument("--num_test_subjects", type=int, default=4)
    parser.add_argument("--num_validation_subjects", type=int, default=2)
    parser.add_argument("--frames_per_activity", type=int, default=24)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache_dir", default=None, help="where the builder prepares synthfaces")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    options = parser.parse_args()

    splits = subject_splits(options)
    results, seconds = {}, {}
    for task in ("au", "expression"):
        started = time.perf_counter()
        label_ids = labels_of_split(splits["train"], task)["label_ids"]
        results[task] = classical_references(splits["train"], splits["validation"], splits["test"], task, label_ids)
        seconds[task] = round(time.perf_counter() - started, 1)
    print(format_table(results))
    print(f"seconds: {seconds}")
    subjects = {name: sorted(set(split["subject"])) for name, split in splits.items()}
    write_report({"options": vars(options), "subjects": subjects, "seconds": seconds, "results": results},
                 options.output)


if __name__ == "__main__":
    main()

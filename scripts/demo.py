"""The main job (`make demo`): CLEF's pipeline (stage 0 -> stage 1 -> stage 2) on the shipped synthetic faces, next to
random-init and stage-0-only starts, the label sides of Table 6 (I, IN, IND), the trivial predictors and logistic
regression on pixels and on HOG, every row on the same test subjects, selection on validation subjects.

The job itself is `clef_hf.training.main_job.run_main_job`; `--quick` shrinks it to a smoke test. Independent stages
and rows run side by side in `--workers` processes (default 2) of `--worker_threads` torch threads (default 1), so the
job uses two cores and never sets torch to every core of the machine; `--workers 1` runs everything in this process,
on torch's default threads or `--threads`.
"""

import argparse
import dataclasses

import torch

from clef_hf.training.main_job import MainJobOptions, format_table, run_main_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for field in dataclasses.fields(MainJobOptions):
        if field.type in (bool, "bool"):
            # --quick, --no-test_time_flip: each flag keeps the option's default unless given
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=field.default)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(field.type), field.type)
            parser.add_argument(f"--{field.name}", type=kind, default=field.default)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads of this process (default: torch's)")
    arguments = vars(parser.parse_args())
    threads = arguments.pop("threads")
    if threads:
        torch.set_num_threads(threads)
    summary = run_main_job(MainJobOptions(**arguments))
    print(format_table(summary))


if __name__ == "__main__":
    main()

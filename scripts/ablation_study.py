"""The ablation study of Table 6 on the shipped synthetic faces, with the same budget for every method.

Every seed starts from one stage-0 model (image-caption pre-training on captioned faces of other subjects, FaRL in
miniature). Pre-training variants from it (none; self-supervised, SimCLR-style; CLEF activity pre-training, Eq. 2;
EmoCo), each fine-tuned as I, I+N, I+N+D and the poster's I+D for AUs and for expressions, and CL-ILE for AUs, over
several seeds; epochs and AU thresholds chosen on validation subjects, figures on test subjects. Writes `results.json` (every
run's numbers) and `table.md` (mean ± std over the seeds, and Table 6's orderings checked) to `--output_dir`; an
interrupted study resumes where it stopped. The logic lives in `clef_hf.training.ablation`; `--quick` shrinks it all
for a smoke test.
"""

import argparse
import logging
import os


from clef_hf.training.ablation import (
    PRETRAINING_VARIANTS,
    StudyOptions,
    format_report,
    ordering_checks,
    quick_options,
    run_study,
)
from clef_hf.training.arguments import COMPONENTS


def parse_options() -> StudyOptions:
    defaults = StudyOptions()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=defaults.output_dir)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    parser.add_argument("--stage0_steps", type=int, default=defaults.stage0_steps,
                        help="optimizer steps of each seed's stage-0 run (the demo's); 0 starts every run from the "
                             "random initialisation")
    parser.add_argument("--stage0_model", default=None,
                        help="a finished stage-0 model every seed starts from instead of its own stage 0, e.g. the "
                             "demo's outputs/demo/stage0/model")
    parser.add_argument("--pretraining_epochs", type=float, default=defaults.pretraining_epochs)
    parser.add_argument("--finetuning_epochs", type=float, default=defaults.finetuning_epochs)
    parser.add_argument("--pretraining", nargs="+", choices=PRETRAINING_VARIANTS,
                        default=list(defaults.pretraining_variants), help="the pre-training variants to run")
    parser.add_argument("--components", nargs="+", choices=COMPONENTS, default=list(defaults.components))
    parser.add_argument("--tasks", nargs="+", choices=["au", "expression"], default=list(defaults.tasks))
    parser.add_argument("--no_cl_ile", action="store_true", help="leave CL-ILE out")
    parser.add_argument("--emoco_queue_size", type=int, default=defaults.emoco_queue_size)
    parser.add_argument("--emoco_momentum", type=float, default=defaults.emoco_momentum)
    parser.add_argument("--workers", type=int, default=defaults.workers,
                        help="runs side by side, each in its own process with --worker_threads torch threads")
    parser.add_argument("--worker_threads", type=int, default=defaults.worker_threads)
    parser.add_argument("--keep_checkpoints", action="store_true", help="keep each finished run's training state")
    parser.add_argument("--quick", action="store_true", help="a tiny data set, 4 steps per run, one seed (smoke test)")
    args = parser.parse_args()
    options = StudyOptions(
        output_dir=args.output_dir, seeds=args.seeds, stage0_steps=args.stage0_steps, stage0_model=args.stage0_model,
        pretraining_epochs=args.pretraining_epochs,
        finetuning_epochs=args.finetuning_epochs, pretraining_variants=args.pretraining, components=args.components,
        tasks=args.tasks, include_cl_ile=not args.no_cl_ile, emoco_queue_size=args.emoco_queue_size,
        emoco_momentum=args.emoco_momentum, keep_checkpoints=args.keep_checkpoints,
        workers=args.workers, worker_threads=args.worker_threads,
    )
    return quick_options(options) if args.quick else options


def main() -> None:
    options = parse_options()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = run_study(options)
    print("\n" + format_report(summary, ordering_checks(summary)))
    print(f"Results in {os.path.join(options.output_dir, 'results.json')} and "
          f"{os.path.join(options.output_dir, 'table.md')}")


if __name__ == "__main__":
    main()

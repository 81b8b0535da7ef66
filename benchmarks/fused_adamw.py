"""What `--fused_adamw` (torch's fused AdamW kernel; off by default) would buy: the optimizer step alone, a stage-2
row and a stretch of stage 0, each timed with the fused kernel and with torch's default (a loop per tensor on CPU),
side by side in one run.

Rounds alternate the two ways (fused first in even rounds, the loop first in odd ones) so that both see the same
load on a shared machine; medians over `--repeats` rounds. One torch thread, as in the demo's workers.

- step: `optimizer.step()` alone on the demo's stage-0 model (`configs/demo_model.json` with the package tokenizer's
  1,137-token vocabulary) with gradients on every parameter, the parameter groups of `make_optimizer`;
- stage 2: `finetune` of the demo's row "stage 0 -> IND" for expressions, `--epochs` epochs (validation every epoch,
  test at the end), the demo's recipe with only `fused_adamw` changed;
- stage 0: `pretrain` of the demo's stage 0 (captions, batch 64) for `--stage0_steps` steps.

The fused kernel computes the same update in another order of floating-point operations, so the figures agree to
rounding, not to the bit; the report prints both ways' validation and test figures. Needs `make demo`'s stage 0 and
data cache.

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python benchmarks/fused_adamw.py --output fused_adamw.json
"""

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from clef_hf import CLEFModel  # noqa: E402
from clef_hf.training.arguments import FineTuningArguments, PretrainingArguments  # noqa: E402
from clef_hf.training.finetune import finetune  # noqa: E402
from clef_hf.training.main_job import MainJobOptions  # noqa: E402
from clef_hf.training.optimization import make_optimizer  # noqa: E402
from clef_hf.training.pretrain import pretrain  # noqa: E402
from clef_hf.training.recipes import SYNTHFACES_FINETUNING, SYNTHFACES_MODEL_CONFIG, SYNTHFACES_RECIPE  # noqa: E402

WAYS = ("fused", "loop")


def step_seconds(work_dir: str, fused: bool, demo_dir: str, steps: int = 20) -> float:
    """Median seconds of one `optimizer.step()` on the demo's stage-0 model, every parameter with a gradient."""
    model = CLEFModel.from_pretrained(os.path.join(demo_dir, "stage0", "model"))
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-3
    optimizer = make_optimizer(model, FineTuningArguments(
        output_dir=work_dir, config_file=SYNTHFACES_MODEL_CONFIG, **{**SYNTHFACES_RECIPE, "fused_adamw": fused}))
    optimizer.step()  # the state is created on the first step
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def stage2_run(work_dir: str, name: str, fused: bool, demo_dir: str, epochs: float) -> tuple[float, dict]:
    options = MainJobOptions(output_dir=demo_dir)
    started = time.perf_counter()
    result = finetune(FineTuningArguments(
        output_dir=os.path.join(work_dir, name), task="expression", components="IND", dataset="synthfaces",
        dataset_options=json.dumps(options.data_options), cache_dir=os.path.join(demo_dir, "data"), num_proc=1,
        num_train_epochs=epochs, eval_split="validation", test_split="test",
        model_name_or_path=os.path.join(demo_dir, "stage0", "model"), report_to="none",
        **{**SYNTHFACES_FINETUNING, **SYNTHFACES_RECIPE, "seed": options.seed, "logging_steps": 50,
           "checkpointing_steps": 10**6, "fused_adamw": fused},
    ))
    return time.perf_counter() - started, {"validation": result["validation"]["accuracy"],
                                           "test": result["test"]["accuracy"]}


def stage0_run(work_dir: str, name: str, fused: bool, demo_dir: str, steps: int) -> tuple[float, float]:
    options = MainJobOptions(output_dir=demo_dir)
    folder = os.path.join(work_dir, name)
    started = time.perf_counter()
    pretrain(PretrainingArguments(
        output_dir=folder, dataset="synthfaces", dataset_options=json.dumps(options.stage0_data_options),
        cache_dir=os.path.join(demo_dir, "data"), num_proc=1, num_train_epochs=1.0, max_steps=steps,
        pretraining_losses="image_text", config_file=SYNTHFACES_MODEL_CONFIG, report_to="none",
        **{**SYNTHFACES_RECIPE, "per_device_train_batch_size": options.stage0_batch_size,
           "learning_rate": options.stage0_learning_rate, "seed": options.seed, "logging_steps": steps,
           "checkpointing_steps": 10**6, "fused_adamw": fused},
    ))
    seconds = time.perf_counter() - started
    with open(os.path.join(folder, "metrics.jsonl")) as file:
        losses = [json.loads(line).get("train/loss") for line in file]
    return seconds, [loss for loss in losses if loss is not None][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo_dir", default="outputs/demo", help="the demo's output folder")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=float, default=2.0, help="stage-2 epochs per run")
    parser.add_argument("--stage0_steps", type=int, default=100, help="stage-0 steps per run")
    parser.add_argument("--output", default=None, help="also write the report here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    timings = {part: {way: [] for way in WAYS} for part in ("step", "stage2", "stage0")}
    figures, losses = {}, {}
    with tempfile.TemporaryDirectory() as work_dir:
        for round_ in range(args.repeats):
            order = WAYS if round_ % 2 == 0 else WAYS[::-1]
            for way in order:
                timings["step"][way].append(step_seconds(work_dir, way == "fused", args.demo_dir))
            for way in order:
                seconds, figures[way] = stage2_run(work_dir, f"stage2-{way}-{round_}", way == "fused",
                                                   args.demo_dir, args.epochs)
                timings["stage2"][way].append(seconds)
            for way in order:
                seconds, losses[way] = stage0_run(work_dir, f"stage0-{way}-{round_}", way == "fused",
                                                  args.demo_dir, args.stage0_steps)
                timings["stage0"][way].append(seconds)
    medians = {part: {way: round(statistics.median(values), 4) for way, values in by_way.items()}
               for part, by_way in timings.items()}
    report = {
        "optimizer_step_s": medians["step"], "stage2_run_s": medians["stage2"], "stage0_run_s": medians["stage0"],
        "speedup": {part: round(by_way["loop"] / by_way["fused"], 3) for part, by_way in medians.items()},
        "stage2_figures": figures, "stage0_last_loss": losses,
        "repeats": args.repeats, "epochs": args.epochs, "stage0_steps": args.stage0_steps,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    print(json.dumps(report, indent=1))
    if args.output:
        with open(args.output, "w") as file:
            json.dump(report, file, indent=1)


if __name__ == "__main__":
    main()

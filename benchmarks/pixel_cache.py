"""What `--cache_pixel_values` (`clef_hf.training.data.with_pixel_values`) buys: the demo's fine-tuning split read
through `FacialBehaviorCollator` as images (decoded and processed every epoch) and as the cached `pixel_values`
column, and the demo's stage-2 row "stage 0 -> I" trained both ways, measured side by side in one run.

Rounds alternate the two forms (images first in even rounds, cached first in odd ones) so that both see the same load
on a shared machine; medians over `--repeats` rounds. One torch thread, as in the demo's workers.

- loading: one epoch of the training split through a DataLoader with the training loop's sampler and batch size;
- training: `finetune` for `--epochs` epochs from the demo's stage 0 (validation each epoch, test at the end), the
  demo's recipe with only `cache_pixel_values` changed. The first cached run pays for processing the splits (that is
  reported apart as `first_cached_s`); later ones reuse `datasets`' cache, as the demo's later rows do.

The two forms must train identically: the check compares the runs' validation and test figures, which must match
exactly (the pixels are the same float32 values). Needs `make demo`'s stage 0 and data cache.

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python benchmarks/pixel_cache.py --output pixel_cache.json
"""

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from clef_hf import CLEFProcessor  # noqa: E402
from clef_hf.training.arguments import FineTuningArguments  # noqa: E402
from clef_hf.training.data import EpochSeededSampler, FacialBehaviorCollator, with_pixel_values  # noqa: E402
from clef_hf.training.finetune import finetune  # noqa: E402
from clef_hf.training.main_job import MainJobOptions  # noqa: E402
from clef_hf.training.recipes import SYNTHFACES_FINETUNING, SYNTHFACES_RECIPE  # noqa: E402
from dataset_builders import build_dataset  # noqa: E402


def loading_seconds(split, collator, batch_size: int) -> float:
    started = time.perf_counter()
    for _ in DataLoader(split, batch_size=batch_size, sampler=EpochSeededSampler(len(split), 0), collate_fn=collator):
        pass
    return time.perf_counter() - started


def training_run(work_dir: str, name: str, cache: bool, demo_dir: str, epochs: float) -> tuple[float, dict]:
    options = MainJobOptions(output_dir=demo_dir)
    started = time.perf_counter()
    result = finetune(FineTuningArguments(
        output_dir=os.path.join(work_dir, name), task="au", components="I", dataset="synthfaces",
        dataset_options=json.dumps(options.data_options), cache_dir=os.path.join(demo_dir, "data"), num_proc=1,
        num_train_epochs=epochs, eval_split="validation", test_split="test",
        model_name_or_path=os.path.join(demo_dir, "stage0", "model"), report_to="none",
        **{**SYNTHFACES_FINETUNING, **SYNTHFACES_RECIPE, "seed": options.seed, "logging_steps": 50,
           "checkpointing_steps": 10**6, "cache_pixel_values": cache},
    ))
    return time.perf_counter() - started, {"validation": result["validation"]["mean_f1"],
                                           "test": result["test"]["mean_f1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo_dir", default="outputs/demo", help="the demo's output folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=2.0, help="fine-tuning epochs per training run")
    parser.add_argument("--output", default=None, help="also write the report here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = MainJobOptions(output_dir=args.demo_dir)
    batch_size = SYNTHFACES_RECIPE["per_device_train_batch_size"]
    split = build_dataset("synthfaces", cache_dir=os.path.join(args.demo_dir, "data"), num_proc=1,
                          **options.data_options)["train"]
    processor = CLEFProcessor.from_pretrained(os.path.join(args.demo_dir, "stage0", "model"))
    collator = FacialBehaviorCollator(processor.image_processor, ("au",))
    forms = {"images": split, "cached": with_pixel_values(split, processor.image_processor)}
    loading = {name: [] for name in forms}
    training = {name: [] for name in forms}
    figures = {}
    with tempfile.TemporaryDirectory() as work_dir:
        # The first cached run processes the splits, unless `datasets` has cached them already (then it is a repeat).
        first_cached_s, figures["cached"] = training_run(work_dir, "first-cached", True, args.demo_dir, args.epochs)
        for round_ in range(args.repeats):
            order = ("images", "cached") if round_ % 2 == 0 else ("cached", "images")
            for name in order:
                loading[name].append(loading_seconds(forms[name], collator, batch_size))
            for name in order:
                seconds, figures[name] = training_run(work_dir, f"{name}-{round_}", name == "cached", args.demo_dir,
                                                      args.epochs)
                training[name].append(seconds)
    report = {
        "images_per_epoch": len(split),
        "loading_epoch_s": {name: round(statistics.median(values), 3) for name, values in loading.items()},
        "training_run_s": {name: round(statistics.median(values), 2) for name, values in training.items()},
        "first_cached_s": round(first_cached_s, 2),
        "figures": figures,
        "identical_figures": figures["images"] == figures["cached"],
        "repeats": args.repeats, "epochs": args.epochs, "torch_threads": torch.get_num_threads(),
    }
    report["loading_speedup"] = round(report["loading_epoch_s"]["images"] / report["loading_epoch_s"]["cached"], 2)
    report["training_speedup"] = round(report["training_run_s"]["images"] / report["training_run_s"]["cached"], 3)
    print(json.dumps(report, indent=1))
    print("PASS" if report["identical_figures"] and report["training_speedup"] > 1 else "FAIL")
    if args.output:
        with open(args.output, "w") as file:
            json.dump(report, file, indent=1)


if __name__ == "__main__":
    main()

"""Overhead of the Accelerate fine-tuning loop (`clef_hf.training.finetune`) over a bare PyTorch loop doing the same
work: steps/s of both, measured side by side in one run, repeats interleaved.

Both loops train the same model (`configs/demo_model.json` by default, the same seed, so the same initial weights) on
the same batches of synthfaces (`dataset_builders.build_dataset("synthfaces", ...)`, prepared once and cached): the
same `EpochSeededSampler` order, the same `FacialBehaviorCollator` with the processor's image processor, a DataLoader
with the same batch size and workers, the same per-step augmentation (`augment_images` with `step_generator`), the
same label prompts (`draw_template`), the same forward and loss (`FineTuningModule`, components IND: Eq. 6), AdamW
with the same parameter groups (`make_optimizer`) and the same warm-up + cosine schedule (`make_scheduler`). The bare
loop is written out below: `loss.backward(); optimizer.step(); optimizer.zero_grad(); scheduler.step()`, no
Accelerator, no `.item()`, no logging, no progress bar. It keeps the losses as tensors and reads them after the clock
stops; they are compared with the library's logged `train/loss` as a check that both loops did the same work.

The library loop runs unmodified, with `report_to="none"`, `checkpointing_steps` above `max_steps` (no checkpoint in
the timed window), `logging_steps` as given (default 10, the library's default: `metrics.jsonl` and the extra
`.item()` of the temperature are part of what is measured) and `max_steps` inside the first epoch (so the end-of-epoch
evaluation, the final checkpoint and the best-model save come after the window).

Timing, in lockstep: the two loops run in the same process, interleaved step by step, so that both see the same
load on a shared machine (timing them in separate runs, even interleaved, left the ratio at the mercy of other
processes: 0.65 to 2.0 between runs on two busy cores). `finetune` runs unmodified; the benchmark swaps
`clef_hf.training.finetune.tqdm` for a subclass whose `update` (called once per optimizer step, right after
`scheduler.step()`) first does tqdm's usual work, then takes one step of the bare loop (set up on the first call) and
returns. A library step is the time from the return of one `update` to the entry of the next: logging and the
checkpoint test of the previous step, fetching and collating the next batch, augmentation, forward, backward,
optimizer and scheduler, the `.item()` calls, the progress bar. A bare step is the time from fetching its batch to
after `scheduler.step()`. The first step of each loop (warm-up) is left out: `max_steps - 1` steps are timed per
loop and repeat; data preparation, model construction and `accelerator.prepare` are outside the steps. steps/s is
timed steps / their summed time. `setup_s` (start of `finetune` to its first step) and `teardown_s` (last step to
return: evaluation, checkpoint, best-model save) are reported apart. The library's logging of its last step falls
after the window, so the window holds (max_steps - 1) // logging_steps of its logging calls.

    HF_HUB_OFFLINE=1 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/training_loop_overhead.py

The verdict compares library steps/s / bare steps/s over all timed steps of all repeats (the bare loop's summed step
time over the library's) with `--target` (0.90: the library within 10%).
"""

import argparse
import contextlib
import importlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
from accelerate.state import AcceleratorState, GradientState  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmark_report import add_threads_option, use_threads, write_report  # noqa: E402
from clef_hf.training import FineTuningArguments, finetune  # noqa: E402
from clef_hf.training.augmentation import augment_images  # noqa: E402
from clef_hf.training.data import (  # noqa: E402
    EpochSeededSampler,
    FacialBehaviorCollator,
    class_weights_from_split,
    get_split,
    load_splits,
)
from clef_hf.training.finetune import FineTuningModule  # noqa: E402
from clef_hf.training.initialization import labels_of_split, load_model_and_processor  # noqa: E402
from clef_hf.training.optimization import make_optimizer, make_scheduler, training_steps  # noqa: E402
from clef_hf.training.pretrain import draw_template, step_generator  # noqa: E402
from clef_hf.vocabulary import fill_template  # noqa: E402

#: The module (`clef_hf.training.finetune` the attribute is the function, which shadows it).
finetune_module = importlib.import_module("clef_hf.training.finetune")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, "benchmarks", "results", "training_loop_overhead.json")
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "demo_model.json")
#: A model smaller than the demo one, for --tiny (smoke tests).
TINY_CONFIG = {
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 16},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "max_position_embeddings": 77},
    "projection_dim": 16,
}


def reset_accelerate_state() -> None:
    """Forget the process-wide Accelerate singletons, so that each library run starts as a fresh process would."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def make_args(options: argparse.Namespace, output_dir: str) -> FineTuningArguments:
    return FineTuningArguments(
        output_dir=output_dir,
        dataset="synthfaces",
        dataset_options=json.dumps(options.dataset_options),
        cache_dir=options.cache_dir,
        config_file=options.config_file,
        task="au",
        components="IND",
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=128,
        max_steps=options.max_steps,
        logging_steps=options.logging_steps,
        checkpointing_steps=options.max_steps + 1,  # none inside the timed window (finetune saves one at the end)
        report_to="none",
        dataloader_num_workers=options.num_workers,
        cpu=options.cpu,
        seed=options.seed,
        eval_split="test",  # synthfaces as built here has train and test splits only
        test_split=None,
    )


class BareLoop:
    """The same steps as `finetune`, in plain PyTorch: set up on construction, one optimizer step per `step()`."""

    def __init__(self, args: FineTuningArguments, device: torch.device):
        started = time.perf_counter()
        set_seed(args.seed)  # as finetune does: the same initial weights
        splits = load_splits(args)
        train_split = get_split(splits, args.train_split, ("image", "au"), "--train_split")
        labels = labels_of_split(train_split, "au")
        class_weights = class_weights_from_split(train_split, "au", len(labels["label_names"]))
        model, processor = load_model_and_processor(None, args.config_file, task="au", labels=labels,
                                                    class_weights=class_weights)
        config = model.config

        def tokens(texts):
            encoded = processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                                          max_length=config.text_config.max_position_embeddings)
            return {"input_ids": encoded["input_ids"].to(device),
                    "attention_mask": encoded["attention_mask"].to(device)}

        self.name_tokens = tokens(fill_template(config.name_template, config.label_names))
        self.description_tokens = [tokens(fill_template(t, config.label_descriptions))
                                   for t in config.description_templates]
        dataloader = DataLoader(train_split, batch_size=args.per_device_train_batch_size,
                                sampler=EpochSeededSampler(len(train_split), args.seed),
                                collate_fn=FacialBehaviorCollator(processor.image_processor, ("au",)),
                                num_workers=args.dataloader_num_workers)
        self.module = FineTuningModule(model, "IND").to(device)
        self.optimizer = make_optimizer(self.module, args)
        _, total, warmup = training_steps(args, len(dataloader))
        self.scheduler = make_scheduler(self.optimizer, args, total, warmup)
        self.weights = torch.tensor(class_weights, device=device)
        self.batches = iter(dataloader)
        self.args, self.device, self.index = args, device, 0
        self.losses: list[torch.Tensor] = []
        self.module.train()
        self.setup_seconds = time.perf_counter() - started

    def step(self) -> float:
        """One optimizer step; its seconds, from fetching the batch to after `scheduler.step()`."""
        started = time.perf_counter()
        args, device, index = self.args, self.device, self.index
        batch = next(self.batches)
        descriptions = self.description_tokens[draw_template(args.seed, index, len(self.description_tokens))]
        pixel_values = augment_images(batch["pixel_values"].to(device), step_generator(args.seed, index, 0),
                                      args.augmentation)
        output = self.module(pixel_values=pixel_values, labels=batch["au"].to(device), class_weights=self.weights,
                             name_input_ids=self.name_tokens["input_ids"],
                             name_attention_mask=self.name_tokens["attention_mask"],
                             description_input_ids=descriptions["input_ids"],
                             description_attention_mask=descriptions["attention_mask"])
        output.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()  # the library's per-step loss.item() waits for the step too
        self.losses.append(output.loss.detach())
        self.index += 1
        return time.perf_counter() - started


class Lockstep:
    """Runs one `finetune` with the bare loop interleaved: one bare step inside each progress-bar update."""

    def __init__(self, args: FineTuningArguments, device: torch.device):
        self.args, self.device = args, device
        self.bare: BareLoop | None = None
        self.library_seconds: list[float] = []
        self.bare_seconds: list[float] = []
        self.first_update: float | None = None
        self.resumed: float | None = None

    def on_update(self) -> None:
        now = time.perf_counter()
        if self.resumed is None:
            self.first_update = now
        else:
            self.library_seconds.append(now - self.resumed)
        if self.bare is None:
            self.bare = BareLoop(self.args, self.device)
        self.bare_seconds.append(self.bare.step())
        self.resumed = time.perf_counter()

    def progress_bar_class(self):
        lockstep = self

        class LockstepTqdm(finetune_module.tqdm):
            def update(self, n=1):
                result = super().update(n)  # tqdm's own work stays in the library's step
                lockstep.on_update()
                return result

        return LockstepTqdm

    def run(self) -> dict:
        reset_accelerate_state()
        original = finetune_module.tqdm
        finetune_module.tqdm = self.progress_bar_class()
        started = time.perf_counter()
        try:
            with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
                finetune(self.args)  # tqdm writes to stderr: silenced, but it still does all its work
        finally:
            finetune_module.tqdm = original
        finished = time.perf_counter()
        with open(os.path.join(self.args.output_dir, "metrics.jsonl")) as file:
            logged = [json.loads(line) for line in file if line.strip()]
        shutil.rmtree(self.args.output_dir, ignore_errors=True)
        return {
            "library_step_seconds": self.library_seconds,
            "bare_step_seconds": self.bare_seconds[1:],  # the first (warm-up) step left out, as the library's
            "library_setup_seconds": self.first_update - started,
            "library_teardown_seconds": finished - self.resumed,
            "bare_setup_seconds": self.bare.setup_seconds,
            "library_logged_losses": {entry["step"]: entry["train/loss"] for entry in logged if "train/loss" in entry},
            "bare_losses": [loss.item() for loss in self.bare.losses],
        }


def windowed_means(losses: list[float], logging_steps: int) -> dict[int, float]:
    """The bare losses averaged as `finetune` logs them: over the steps since the last logged step."""
    means, start = {}, 0
    for step in range(1, len(losses) + 1):
        if step % logging_steps == 0 or step == len(losses):
            means[step] = sum(losses[start:step]) / (step - start)
            start = step
    return means


def run_benchmark(options: argparse.Namespace) -> dict:
    # Prepare (or find in the cache) the data once, outside every timed run.
    splits = load_splits(make_args(options, tempfile.gettempdir()))
    num_train = len(splits["train"])
    if options.max_steps * options.batch_size > num_train:
        raise SystemExit(f"--max_steps {options.max_steps} x --batch_size {options.batch_size} exceeds the "
                         f"{num_train} training images: the window would include an end-of-epoch evaluation.")
    if options.max_steps < 3:
        raise SystemExit("--max_steps must be at least 3.")
    device = torch.device("cpu" if options.cpu or not torch.cuda.is_available() else "cuda")
    workdir = tempfile.mkdtemp(prefix="clef-loop-overhead-")
    runs = []
    try:
        for repeat in range(options.repeats):
            run = Lockstep(make_args(options, os.path.join(workdir, f"run-{repeat}")), device).run()
            library, bare = sum(run["library_step_seconds"]), sum(run["bare_step_seconds"])
            run["library_steps_per_second"] = len(run["library_step_seconds"]) / library
            run["bare_steps_per_second"] = len(run["bare_step_seconds"]) / bare
            run["ratio"] = bare / library
            runs.append(run)
            print(f"  repeat {repeat}: library {run['library_steps_per_second']:.3f} steps/s, bare "
                  f"{run['bare_steps_per_second']:.3f} steps/s, library/bare {run['ratio']:.3f} "
                  f"(library setup {run['library_setup_seconds']:.1f} s, teardown "
                  f"{run['library_teardown_seconds']:.1f} s)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    library_all = [t for run in runs for t in run["library_step_seconds"]]
    bare_all = [t for run in runs for t in run["bare_step_seconds"]]
    ratio = sum(bare_all) / sum(library_all)
    loops = {}
    for name, times in (("library", library_all), ("bare", bare_all)):
        loops[name] = {
            "steps_per_second": len(times) / sum(times),
            "images_per_second": len(times) / sum(times) * options.batch_size,
            "steps_per_second_runs": [run[f"{name}_steps_per_second"] for run in runs],
            "step_seconds_median": statistics.median(times),
            "step_seconds_max": max(times),
            "setup_seconds_median": statistics.median(run[f"{name}_setup_seconds"] for run in runs),
        }
    loops["library"]["teardown_seconds_median"] = statistics.median(run["library_teardown_seconds"] for run in runs)
    # Where the library's extra time goes: steps that follow a logging step (metrics.jsonl, the temperature's
    # .item(), the progress bar's postfix) against the others. Timed library step j (0-based) is the interval after
    # optimizer step j + 1, so it holds that step's logging when (j + 1) % logging_steps == 0.
    after_logging, other = [], []
    for run in runs:
        for j, (lib, bare) in enumerate(zip(run["library_step_seconds"], run["bare_step_seconds"])):
            (after_logging if (j + 1) % options.logging_steps == 0 else other).append(lib - bare)
    loops["library"]["extra_seconds_median_after_logging_step"] = (
        statistics.median(after_logging) if after_logging else None)
    loops["library"]["extra_seconds_median_other_steps"] = statistics.median(other)
    per_step_ratios = [bare / lib for run in runs for lib, bare in zip(run["library_step_seconds"],
                                                                        run["bare_step_seconds"])]

    # Same work: the library's logged losses against the bare losses averaged over the same windows.
    differences = []
    for run in runs:
        bare_means = windowed_means(run["bare_losses"], options.logging_steps)
        logged = run["library_logged_losses"]
        differences += [abs(bare_means[step] - logged[step]) for step in set(bare_means) & set(logged)]
    loss_difference = max(differences) if differences else float("nan")

    return {
        "model_config": options.config_file if not options.tiny else "tiny (TINY_CONFIG in the script)",
        "dataset": {"name": "synthfaces", "options": options.dataset_options, "train_images": num_train},
        "components": "IND",
        "batch_size": options.batch_size,
        "max_steps": options.max_steps,
        "timed_steps_per_loop_and_repeat": options.max_steps - 1,
        "method": "lockstep: one bare step inside each of finetune's progress-bar updates; steps timed apart",
        "logging_steps": options.logging_steps,
        "dataloader_num_workers": options.num_workers,
        "repeats": options.repeats,
        "device": "cpu" if options.cpu or not torch.cuda.is_available() else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "loops": loops,
        "ratio_runs": [run["ratio"] for run in runs],
        "per_step_ratio_median": statistics.median(per_step_ratios),
        "ratio_library_to_bare": ratio,
        "max_abs_logged_loss_difference": loss_difference,
        "target_ratio": options.target,
        "verdict": "PASS" if ratio >= options.target else "FAIL",
    }


def print_table(report: dict) -> None:
    header = ["loop", "steps/s", "images/s", "median step s", "max step s", "setup s", "teardown s"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, row in report["loops"].items():
        teardown = row.get("teardown_seconds_median")
        print(" | ".join([name, f"{row['steps_per_second']:.3f}", f"{row['images_per_second']:.1f}",
                          f"{row['step_seconds_median']:.4f}", f"{row['step_seconds_max']:.4f}",
                          f"{row['setup_seconds_median']:.2f}", "-" if teardown is None else f"{teardown:.2f}"]))
    library = report["loops"]["library"]
    after = library["extra_seconds_median_after_logging_step"]
    print(f"library - bare per step (median): {library['extra_seconds_median_other_steps'] * 1e3:+.1f} ms; after a "
          f"logging step: {'-' if after is None else f'{after * 1e3:+.1f} ms'}")
    print(f"library/bare per repeat: {', '.join(f'{r:.3f}' for r in report['ratio_runs'])}; "
          f"per-step median {report['per_step_ratio_median']:.3f}")
    print(f"max |logged loss - bare loss| over logging windows: {report['max_abs_logged_loss_difference']:.2e}")
    print(f"library / bare steps/s = {report['ratio_library_to_bare']:.3f} (target >= {report['target_ratio']:.2f}): "
          f"{report['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_file", "--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--batch_size", "--batch-size", type=int, default=64)
    parser.add_argument("--max_steps", "--max-steps", type=int, default=30)
    parser.add_argument("--logging_steps", "--logging-steps", type=int, default=10)
    parser.add_argument("--num_workers", "--num-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="finetune runs, each with the bare loop in lockstep")
    parser.add_argument("--num_subjects", "--num-subjects", type=int, default=16,
                        help="synthfaces subjects (16, with 4 held out: the shipped default)")
    parser.add_argument("--cache_dir", "--cache-dir", help="where synthfaces is prepared (datasets' default if unset)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if CUDA is available")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run: tiny model, data and steps")
    add_threads_option(parser)
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="write the measurements to this JSON file")
    options = parser.parse_args()
    use_threads(options.threads)
    options.dataset_options = {"num_subjects": options.num_subjects, "num_test_subjects": 4}
    datasets.disable_progress_bars()
    workdir = None
    if options.tiny:
        workdir = tempfile.mkdtemp(prefix="clef-loop-tiny-")
        options.config_file = os.path.join(workdir, "tiny.json")
        with open(options.config_file, "w") as file:
            json.dump(TINY_CONFIG, file)
        options.dataset_options = {"num_subjects": 2, "num_test_subjects": 1, "frames_per_activity": 2,
                                   "image_size": 32}
        options.batch_size, options.max_steps, options.logging_steps, options.repeats = 4, 4, 2, 1
    try:
        report = run_benchmark(options)
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(report)
    write_report(report, options.output)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

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

Timing (the same for both loops): a timestamp after each optimizer step (in the bare loop after `scheduler.step()`;
in the library loop at `progress.update(1)`, which `finetune` calls right after `scheduler.step()`: the benchmark
swaps `clef_hf.training.finetune.tqdm` for a subclass whose `update` records `time.perf_counter()` and then does
tqdm's usual work, so the progress bar's cost stays in). steps/s = (max_steps - 1) / (last stamp - first stamp): it
leaves out data preparation, model construction, `accelerator.prepare` and the first step (warm-up), and includes
everything a step does afterwards, data loading and collation for the next batch included (the library's logging
of the last step falls after the window: the window holds (max_steps - 1) // logging_steps of its logging calls). `setup_s` (start of
`finetune` to the first step's stamp, or of the bare run) and `teardown_s` (last stamp to return: evaluation,
checkpoint, saving the best model) are reported apart.

    HF_HUB_OFFLINE=1 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/training_loop_overhead.py

The verdict compares the median over repeats of the per-pair ratio (library steps/s / bare steps/s, each pair run
back to back, the order alternating between repeats) with the target `--target` (0.90: the library within 10%).
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


class StepClock:
    """Timestamps of optimizer steps, recorded by the progress bar `finetune` updates once per step."""

    stamps: list[float] = []

    @classmethod
    def progress_bar(cls):
        base = finetune_module.tqdm

        class RecordingTqdm(base):
            def update(self, n=1):
                cls.stamps.append(time.perf_counter())
                return super().update(n)

        return RecordingTqdm

    @classmethod
    @contextlib.contextmanager
    def installed(cls):
        original = finetune_module.tqdm
        cls.stamps = []
        finetune_module.tqdm = cls.progress_bar()
        try:
            yield cls.stamps
        finally:
            finetune_module.tqdm = original


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
    )


def run_library(options: argparse.Namespace, workdir: str, index: int) -> dict:
    """One unmodified `finetune` run, its optimizer steps timestamped by the progress bar."""
    output_dir = os.path.join(workdir, f"library-{index}")
    args = make_args(options, output_dir)
    reset_accelerate_state()
    started = time.perf_counter()
    with StepClock.installed() as stamps, open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        finetune(args)  # tqdm writes to stderr: silenced here, but still does all its work
        stamps = list(stamps)
    finished = time.perf_counter()
    with open(os.path.join(output_dir, "metrics.jsonl")) as file:
        logged = [json.loads(line) for line in file if line.strip()]
    losses = {entry["step"]: entry["train/loss"] for entry in logged if "train/loss" in entry}
    shutil.rmtree(output_dir, ignore_errors=True)
    return {"stamps": stamps, "setup_s": stamps[0] - started, "teardown_s": finished - stamps[-1],
            "logged_losses": losses}


def run_bare(options: argparse.Namespace, workdir: str, index: int) -> dict:
    """The same steps as `finetune`, in plain PyTorch."""
    args = make_args(options, os.path.join(workdir, f"bare-{index}"))  # only read, nothing written
    started = time.perf_counter()
    device = torch.device("cpu" if options.cpu or not torch.cuda.is_available() else "cuda")
    set_seed(args.seed)
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
        return {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}

    name_tokens = tokens(fill_template(config.name_template, config.label_names))
    description_tokens = [tokens(fill_template(t, config.label_descriptions)) for t in config.description_templates]
    sampler = EpochSeededSampler(len(train_split), args.seed)
    dataloader = DataLoader(train_split, batch_size=args.per_device_train_batch_size, sampler=sampler,
                            collate_fn=FacialBehaviorCollator(processor.image_processor, ("au",)),
                            num_workers=args.dataloader_num_workers)
    module = FineTuningModule(model, "IND").to(device)
    optimizer = make_optimizer(module, args)
    _, total, warmup = training_steps(args, len(dataloader))
    scheduler = make_scheduler(optimizer, args, total, warmup)
    weights = torch.tensor(class_weights, device=device)
    augmentation = args.augmentation
    module.train()

    stamps, losses = [], []
    for step, batch in enumerate(dataloader):
        descriptions = description_tokens[draw_template(args.seed, step, len(description_tokens))]
        pixel_values = augment_images(batch["pixel_values"].to(device), step_generator(args.seed, step, 0), augmentation)
        output = module(pixel_values=pixel_values, labels=batch["au"].to(device), class_weights=weights,
                        name_input_ids=name_tokens["input_ids"], name_attention_mask=name_tokens["attention_mask"],
                        description_input_ids=descriptions["input_ids"],
                        description_attention_mask=descriptions["attention_mask"])
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()  # the library's per-step loss.item() synchronises too; stamp finished work
        stamps.append(time.perf_counter())
        losses.append(output.loss.detach())
        if step + 1 >= total:
            break
    finished = time.perf_counter()
    return {"stamps": stamps, "setup_s": stamps[0] - started, "teardown_s": finished - stamps[-1],
            "losses": [loss.item() for loss in losses]}


def steps_per_second(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def step_times(stamps: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(stamps, stamps[1:])]


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
    workdir = tempfile.mkdtemp(prefix="clef-loop-overhead-")
    runs = {"library": [], "bare": []}
    try:
        if not options.tiny:  # one untimed run of each first: imports, allocator and caches warm for both
            warm = argparse.Namespace(**{**vars(options), "max_steps": 3})
            run_library(warm, workdir, -1)
            run_bare(warm, workdir, -1)
        for repeat in range(options.repeats):
            order = ("library", "bare") if repeat % 2 == 0 else ("bare", "library")
            for name in order:
                run = (run_library if name == "library" else run_bare)(options, workdir, repeat)
                run["steps_per_second"] = steps_per_second(run["stamps"])
                runs[name].append(run)
                print(f"  repeat {repeat} {name:7s}: {run['steps_per_second']:.3f} steps/s "
                      f"(setup {run['setup_s']:.1f} s, teardown {run['teardown_s']:.1f} s)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    pair_ratios = [lib["steps_per_second"] / bare["steps_per_second"]
                   for lib, bare in zip(runs["library"], runs["bare"])]
    median_ratio = statistics.median(pair_ratios)
    loops = {}
    for name, measured in runs.items():
        rates = [run["steps_per_second"] for run in measured]
        times = [t for run in measured for t in step_times(run["stamps"])]
        loops[name] = {
            "steps_per_second_median": statistics.median(rates),
            "steps_per_second_best": max(rates),
            "steps_per_second_runs": rates,
            "images_per_second_median": statistics.median(rates) * options.batch_size,
            "step_seconds_median": statistics.median(times),
            "step_seconds_max": max(times),
            "setup_seconds_median": statistics.median(run["setup_s"] for run in measured),
            "teardown_seconds_median": statistics.median(run["teardown_s"] for run in measured),
        }
    # Where the library's extra time goes: steps that log (metrics.jsonl, temperature .item()) against the others.
    # Step k's interval is stamps[k-1] -> stamps[k] and contains the logging of step k-1 (logging follows the stamp).
    logging_intervals, plain_intervals = [], []
    for run in runs["library"]:
        for k, seconds in enumerate(step_times(run["stamps"]), start=2):
            (logging_intervals if (k - 1) % options.logging_steps == 0 else plain_intervals).append(seconds)
    loops["library"]["step_seconds_median_after_logging_step"] = (
        statistics.median(logging_intervals) if logging_intervals else None)
    loops["library"]["step_seconds_median_other_steps"] = statistics.median(plain_intervals)

    # Same work: the library's logged losses against the bare losses averaged over the same windows.
    bare_means = windowed_means(runs["bare"][0]["losses"], options.logging_steps)
    logged = runs["library"][0]["logged_losses"]
    common = sorted(set(bare_means) & set(logged))
    loss_difference = max(abs(bare_means[step] - logged[step]) for step in common) if common else float("nan")

    return {
        "model_config": options.config_file if not options.tiny else "tiny (TINY_CONFIG in the script)",
        "dataset": {"name": "synthfaces", "options": options.dataset_options, "train_images": num_train},
        "components": "IND",
        "batch_size": options.batch_size,
        "max_steps": options.max_steps,
        "timed_steps_per_run": options.max_steps - 1,
        "logging_steps": options.logging_steps,
        "dataloader_num_workers": options.num_workers,
        "repeats": options.repeats,
        "device": "cpu" if options.cpu or not torch.cuda.is_available() else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "loops": loops,
        "pair_ratios": pair_ratios,
        "ratio_library_to_bare": median_ratio,
        "max_abs_logged_loss_difference": loss_difference,
        "target_ratio": options.target,
        "verdict": "PASS" if median_ratio >= options.target else "FAIL",
    }


def print_table(report: dict) -> None:
    header = ["loop", "steps/s (median)", "steps/s (best)", "images/s", "median step s", "setup s", "teardown s"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, row in report["loops"].items():
        print(" | ".join([name, f"{row['steps_per_second_median']:.3f}", f"{row['steps_per_second_best']:.3f}",
                          f"{row['images_per_second_median']:.1f}", f"{row['step_seconds_median']:.4f}",
                          f"{row['setup_seconds_median']:.2f}", f"{row['teardown_seconds_median']:.2f}"]))
    library = report["loops"]["library"]
    after = library["step_seconds_median_after_logging_step"]
    print(f"library step after a logging step: {after if after is None else f'{after:.4f}'} s; "
          f"other steps: {library['step_seconds_median_other_steps']:.4f} s")
    print(f"pair ratios (library / bare steps/s): {', '.join(f'{r:.3f}' for r in report['pair_ratios'])}")
    print(f"max |logged loss - bare loss| over logging windows: {report['max_abs_logged_loss_difference']:.2e}")
    print(f"library / bare = {report['ratio_library_to_bare']:.3f} (target >= {report['target_ratio']:.2f}): "
          f"{report['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_file", "--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--batch_size", "--batch-size", type=int, default=64)
    parser.add_argument("--max_steps", "--max-steps", type=int, default=30)
    parser.add_argument("--logging_steps", "--logging-steps", type=int, default=10)
    parser.add_argument("--num_workers", "--num-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num_subjects", "--num-subjects", type=int, default=16,
                        help="synthfaces subjects (16, with 4 held out: the shipped default)")
    parser.add_argument("--cache_dir", "--cache-dir", help="where synthfaces is prepared (datasets' default if unset)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if CUDA is available")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run: tiny model, data and steps")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="write the measurements to this JSON file")
    options = parser.parse_args()
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
    if options.output:
        os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
        with open(options.output, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=2)
        print(f"wrote {options.output}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

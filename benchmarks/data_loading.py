"""Data-loading throughput of the training pipeline (a builder's split through `FacialBehaviorCollator` with the
processor's image processor, in a DataLoader with `num_workers` 0 and 2, or `--workers`) against what training consumes (images/s of
a fine-tuning step), measured side by side in one run: is loading the bottleneck?

Two pairings:
  - synthfaces at 64 px (the shipped default, `image_size=64`) through the demo model's processor (64 px), against
    the fine-tuning step of the demo model (`configs/demo_model.json`) at 64 px;
  - synthfaces at 224 px (`image_size=224`, fewer subjects: rendering 224 px faces is slow) through a 224 px
    processor, against the fine-tuning step of the paper's ViT-B/16 (`CLEFConfig()` defaults) at 224 px.

Loading: one pass over the training split per measurement; images/s is the steady rate from the first batch to the
last, and the time to the first batch (worker start-up: paid once per epoch, since the training loops do not keep
workers between epochs) is reported apart, with the whole pass's rate. The DataLoader has the training loop's sampler
(`EpochSeededSampler`) and batch size.

Consumption: one fine-tuning step as `finetune` takes it (components IND: augmentation, forward of the image and text
encoders, Eq. 6 loss, backward, AdamW step) on an already collated batch, on CUDA when available, else the CPU.
ViT-B/16 uses a smaller batch on the CPU (`--vit_batch_size`, default 4 there, 64 on CUDA) since one step of 64 images
takes many minutes on two cores; images/s hardly depends on the batch size on a CPU.

After one untimed warm-up of each, `--repeats` rounds each take one loading pass per worker count (their order
alternating) and one training step, so that loading and consumption are measured under the same load on a shared
machine; medians over the rounds are reported.

    HF_HUB_OFFLINE=1 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/data_loading.py

Verdict per pairing: PASS when loading images/s exceeds consumption images/s with some worker count (the table says
which); `default_workers_suffice` says whether `num_workers=0`, the training default, does. On a CPU-only machine the
two share the same cores: with `num_workers=0` loading and compute run one after the other, and
`serial_loading_share` is the part of each step spent loading, 1/L / (1/L + 1/C).
"""

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmark_report import add_threads_option, use_threads, write_report  # noqa: E402
from clef_hf import CLEFConfig, CLEFModel, CLEFProcessor, train_clip_tokenizer  # noqa: E402
from clef_hf.training.augmentation import AugmentationConfig, augment_images  # noqa: E402
from clef_hf.training.data import EpochSeededSampler, FacialBehaviorCollator, class_weights_from_split  # noqa: E402
from clef_hf.training.finetune import FineTuningModule  # noqa: E402
from clef_hf.training.initialization import labels_of_split  # noqa: E402
from clef_hf.training.pretrain import step_generator  # noqa: E402
from clef_hf.vocabulary import fill_template  # noqa: E402
from dataset_builders import build_dataset  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, "benchmarks", "results", "data_loading.json")
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo_model.json")


def make_model(config_dict: dict, tokenizer, labels: dict, class_weights: list[float]) -> CLEFModel:
    text_config = {**config_dict.get("text_config", {}), "vocab_size": len(tokenizer),
                   "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(0)
    return CLEFModel(CLEFConfig(**{**config_dict, "text_config": text_config}, task="au",
                                class_weights=class_weights, **labels))


def time_loading(split: datasets.Dataset, collator, batch_size: int, num_workers: int) -> dict:
    """One pass over `split` (the training loop's sampler, collator and batch size): the steady rate from the first
    batch to the last, and the time to the first batch (worker start-up, once per epoch)."""
    loader = DataLoader(split, batch_size=batch_size, sampler=EpochSeededSampler(len(split), 0),
                        collate_fn=collator, num_workers=num_workers)
    started = time.perf_counter()
    count, first_count, first = 0, 0, None
    for batch in loader:
        count += batch["pixel_values"].shape[0]
        if first is None:
            first, first_count = time.perf_counter(), count
    finished = time.perf_counter()
    assert count == len(split)
    steady = (count - first_count) / (finished - first) if count > first_count else float("nan")
    return {"images_per_second": steady, "first_batch_seconds": first - started,
            "pass_images_per_second": count / (finished - started)}


class TrainingStep:
    """One fine-tuning step as `finetune` takes it (components IND) on one collated batch, callable repeatedly."""

    def __init__(self, model: CLEFModel, tokenizer, batch: dict, device: torch.device, bf16: bool = False):
        config = model.config

        def tokens(texts):
            encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                                max_length=config.text_config.max_position_embeddings)
            return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)

        self.name_ids, self.name_mask = tokens(fill_template(config.name_template, config.label_names))
        self.description_ids, self.description_mask = tokens(
            fill_template(config.description_templates[0], config.label_descriptions))
        self.module = FineTuningModule(model, "IND").to(device).train()
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=1e-4, weight_decay=0.01)
        self.weights = torch.tensor(config.class_weights, device=device)
        self.pixels, self.labels = batch["pixel_values"].to(device), batch["au"].to(device)
        self.device, self.bf16, self.count = device, bf16, 0
        self.augmentation = AugmentationConfig()

    def __call__(self) -> float:
        """Seconds for one step."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            output = self.module(
                pixel_values=augment_images(self.pixels, step_generator(0, self.count, 0), self.augmentation),
                labels=self.labels, class_weights=self.weights, name_input_ids=self.name_ids,
                name_attention_mask=self.name_mask, description_input_ids=self.description_ids,
                description_attention_mask=self.description_mask)
        output.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        output.loss.item()
        if cuda:
            torch.cuda.synchronize()
        self.count += 1
        return time.perf_counter() - started


def measure_pairing(name: str, options: argparse.Namespace, dataset_options: dict, config_dict: dict,
                    model_name: str, step_batch_size: int, tokenizer, device: torch.device) -> dict:
    print(f"{name}: preparing synthfaces {dataset_options}", flush=True)
    split = build_dataset("synthfaces", cache_dir=options.cache_dir, **dataset_options)["train"]
    image_size = config_dict["vision_config"]["image_size"]
    processor = CLEFProcessor.from_tokenizer(tokenizer, image_size=image_size)
    collator = FacialBehaviorCollator(processor.image_processor, ("au",))
    if len(split) < 3 * options.batch_size:
        raise SystemExit(f"{name}: {len(split)} training images; need at least 3 batches of {options.batch_size}.")

    labels = labels_of_split(split, "au")
    class_weights = class_weights_from_split(split, "au", len(labels["label_names"]))
    model = make_model(config_dict, tokenizer, labels, class_weights)
    rows = [split[i % len(split)] for i in range(step_batch_size)]
    step = TrainingStep(model, tokenizer, collator(rows), device)
    bf16_step = TrainingStep(model, tokenizer, collator(rows), device, bf16=True) if (
        device.type == "cuda" and options.bf16) else None

    # Warm-up (file cache, decoders, kernels, the AdamW state), then repeats of: one loading pass per worker count
    # (order alternating), one training step; so that both sides see the same load on a shared machine.
    time_loading(split, collator, options.batch_size, 0)
    step()
    if bf16_step:
        bf16_step()
    worker_counts = options.workers
    loading = {workers: [] for workers in worker_counts}
    step_seconds, bf16_seconds = [], []
    for repeat in range(options.repeats):
        for workers in (worker_counts if repeat % 2 == 0 else worker_counts[::-1]):
            loading[workers].append(time_loading(split, collator, options.batch_size, workers))
        step_seconds.append(step())
        if bf16_step:
            bf16_seconds.append(bf16_step())
        print(f"  repeat {repeat}: loading " + ", ".join(
            f"{w} workers {loading[w][-1]['images_per_second']:.1f} images/s" for w in worker_counts)
            + f"; training step {step_batch_size / step_seconds[-1]:.1f} images/s", flush=True)
    consumption = step_batch_size / statistics.median(step_seconds)
    row = {
        "dataset_options": dataset_options,
        "train_images": len(split),
        "processor_image_size": image_size,
        "loader_batch_size": options.batch_size,
        "loading_images_per_second": {str(w): statistics.median(r["images_per_second"] for r in v)
                                      for w, v in loading.items()},
        "loading_first_batch_seconds": {str(w): statistics.median(r["first_batch_seconds"] for r in v)
                                        for w, v in loading.items()},
        "loading_pass_images_per_second": {str(w): statistics.median(r["pass_images_per_second"] for r in v)
                                           for w, v in loading.items()},
        "loading_runs": {str(w): v for w, v in loading.items()},
        "model": model_name,
        "step_batch_size": step_batch_size,
        "step_device": device.type if device.type == "cpu" else torch.cuda.get_device_name(device),
        "step_seconds": step_seconds,
        "consumption_images_per_second": consumption,
    }
    if bf16_seconds:
        row["consumption_images_per_second_bf16"] = step_batch_size / statistics.median(bf16_seconds)
    demand = max(row["consumption_images_per_second"], row.get("consumption_images_per_second_bf16", 0.0))
    margins = {w: rate / demand for w, rate in row["loading_images_per_second"].items()}
    row["loading_to_consumption"] = margins
    row["serial_loading_share"] = (1 / row["loading_images_per_second"]["0"]) / (
        1 / row["loading_images_per_second"]["0"] + 1 / demand)
    row["default_workers_suffice"] = margins["0"] > 1.0
    row["verdict"] = "PASS" if max(margins.values()) > 1.0 else "FAIL"
    del model, step, bf16_step
    return row


def run_benchmark(options: argparse.Namespace) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not options.cpu else "cpu")
    tokenizer = train_clip_tokenizer()
    with open(DEMO_CONFIG) as file:
        demo = {**json.load(file), "_name": "demo_model.json"}
    vit_b = {"vision_config": {"image_size": 224}, "_name": "CLEFConfig() defaults: ViT-B/16, 224 px"}
    if options.tiny:
        demo = {"vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
                "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                "num_attention_heads": 2},
                "projection_dim": 16, "_name": "tiny"}
        vit_b = {**demo, "vision_config": {**demo["vision_config"], "image_size": 48}, "_name": "tiny, 48 px"}
        small = {"num_subjects": 2, "num_test_subjects": 1, "frames_per_activity": 2}
        pairings = {"64px_demo": ({**small, "image_size": 32}, demo, 4),
                    "224px_vit_b16": ({**small, "image_size": 48}, vit_b, 4)}
    else:
        vit_batch = options.vit_batch_size or (64 if device.type == "cuda" else 4)
        pairings = {
            "64px_demo": ({"image_size": 64}, demo, options.batch_size),
            "224px_vit_b16": ({"num_subjects": options.subjects_224, "num_test_subjects": 1, "frames_per_activity": 8,
                               "image_size": 224}, vit_b, vit_batch),
        }
    report_pairings = {}
    for name, (dataset_options, config_dict, step_batch) in pairings.items():
        model_name = config_dict["_name"]
        config_dict = {key: value for key, value in config_dict.items() if key != "_name"}
        report_pairings[name] = measure_pairing(name, options, dataset_options, config_dict, model_name, step_batch,
                                                tokenizer, device)
    return {
        "worker_counts": list(options.workers),
        "repeats": options.repeats,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "pairings": report_pairings,
        "verdict": "PASS" if all(row["verdict"] == "PASS" for row in report_pairings.values()) else "FAIL",
    }


def print_table(report: dict) -> None:
    workers = report["worker_counts"]
    header = ["pairing", "train images", *(f"load {w} workers" for w in workers), "step images/s (batch, device)",
              f"load/consume ({' / '.join(map(str, workers))})", "serial load share", "verdict"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, row in report["pairings"].items():
        load, margin = row["loading_images_per_second"], row["loading_to_consumption"]
        consume = f"{row['consumption_images_per_second']:.1f} ({row['step_batch_size']}, {row['step_device']})"
        if "consumption_images_per_second_bf16" in row:
            consume += f", bf16 {row['consumption_images_per_second_bf16']:.1f}"
        enough = [w for w in workers if margin[str(w)] > 1.0]
        print(" | ".join([name, str(row["train_images"]), *(f"{load[str(w)]:.1f}" for w in workers), consume,
                          " / ".join(f"{margin[str(w)]:.2f}x" for w in workers), f"{row['serial_loading_share']:.0%}",
                          row["verdict"] + ("" if row["default_workers_suffice"] else
                                            f" (needs {min(enough)} workers)" if enough else " (needs more workers)")]))
    print(f"loading is not the bottleneck: {report['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", "--batch-size", type=int, default=64, help="loader (and demo step) batch")
    parser.add_argument("--vit_batch_size", "--vit-batch-size", type=int, help="ViT-B/16 step batch (4 CPU, 64 CUDA)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader num_workers values to time (default 0 2; 0 must be among them)")
    parser.add_argument("--subjects_224", "--subjects-224", type=int, default=6,
                        help="synthfaces subjects at 224 px (one held out; 8 frames per activity)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repeats of (one loading pass per worker count, one training step)")
    parser.add_argument("--cache_dir", "--cache-dir", help="where synthfaces is prepared (datasets' default if unset)")
    parser.add_argument("--cpu", action="store_true", help="time the training steps on the CPU even with CUDA")
    parser.add_argument("--bf16", action="store_true", help="on CUDA, also time the steps under bf16 autocast")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run: tiny models and data")
    add_threads_option(parser)
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="write the measurements to this JSON file")
    options = parser.parse_args()
    if 0 not in options.workers:
        parser.error("--workers must include 0 (the training default, and the serial-share measurement)")
    options.workers = sorted(set(options.workers))
    datasets.disable_progress_bars()
    use_threads(options.threads)
    if options.tiny:
        options.batch_size, options.repeats = 4, 1
    report = run_benchmark(options)
    print_table(report)
    write_report(report, options.output)


if __name__ == "__main__":
    main()

"""Speed of the `facial-behavior` pipeline on CPU: float32, bfloat16 autocast and int8 dynamic quantization measured
side by side in one run, with how often each agrees with float32's decisions.

The model is the paper's default architecture (`CLEFConfig()`: a ViT-B/16 image encoder at 224 px, a 12-layer 512-wide
text encoder, 512-dimensional projections) with random weights and the 12 BP4D AUs, or the 7 basic expressions with
`--task expression`; the label embeddings are computed once, as a saved checkpoint holds them. The inputs are
pre-cropped faces (`skimage.data.lfw_subset()`, 25 x 25 gray, resized to 224 by the processor), so `detect_faces=False`
and the timings are the model's, not the face detector's.

    HF_HUB_OFFLINE=1 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/pipeline_speed.py --output outputs/pipeline_speed.json

Each variant runs one warm-up batch, then `--repeats` timed passes over the faces; images/s is from the fastest pass
(the least disturbed by other processes). Agreement is over every (face, label) decision: for AUs, presence at the
model's `au_threshold` and at the float32 median score (a threshold where float32's decisions are split half and half,
so that agreement is not trivially high for random weights); for expressions, the top-1 label.
"""

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage.data import lfw_subset  # noqa: E402

from benchmark_report import write_report  # noqa: E402
from clef_hf import CLEFConfig, CLEFModel, CLEFProcessor, FacialBehaviorPipeline, train_clip_tokenizer  # noqa: E402
from clef_hf.vocabulary import au_labels, expression_labels  # noqa: E402

VARIANTS = {
    "fp32": {},
    "bf16 autocast": {"autocast_bf16": True},
    "int8 dynamic": {"quantize": "int8"},
}


def build_model(task: str) -> tuple[CLEFModel, CLEFProcessor]:
    """A randomly initialised CLEF model of the paper's default size, with its label embeddings computed."""
    tokenizer = train_clip_tokenizer()
    labels = au_labels() if task == "au" else expression_labels()
    text_config = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                   "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(0)
    model = CLEFModel(CLEFConfig(task=task, text_config=text_config, **labels)).eval()
    model.update_label_embeddings(tokenizer)
    return model, CLEFProcessor.from_tokenizer(tokenizer, image_size=model.config.vision_config.image_size)


def scores_of(results: list) -> np.ndarray:
    """(faces, labels) scores, the labels in one fixed order (expressions come sorted by score)."""
    return np.array([[p["score"] for p in sorted(faces[0]["predictions"], key=lambda p: p["label"])]
                     for faces in results])


def time_variant(pipe: FacialBehaviorPipeline, faces: list, batch_size: int, repeats: int, options: dict):
    pipe(faces[:batch_size], batch_size=batch_size, **options)  # warm-up
    seconds, results = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        results = pipe(faces, batch_size=batch_size, **options)
        seconds.append(time.perf_counter() - started)
    return results, seconds


def run_benchmark(options: argparse.Namespace) -> dict:
    model, processor = build_model(options.task)
    faces = list(lfw_subset()[: options.num_faces])
    measured, reference = {}, None
    for name, variant in VARIANTS.items():
        construction = {"quantize": variant["quantize"]} if "quantize" in variant else {}
        call = {key: value for key, value in variant.items() if key != "quantize"}
        pipe = FacialBehaviorPipeline(model=model, processor=processor, detect_faces=False, device="cpu",
                                      **construction)
        results, seconds = time_variant(pipe, faces, options.batch_size, options.repeats, call)
        scores = scores_of(results)
        row = {"images_per_second": len(faces) / min(seconds), "seconds_per_pass": seconds}
        if reference is None:
            reference = scores
        row["max_abs_score_difference"] = float(np.abs(scores - reference).max())
        if options.task == "au":
            threshold = model.config.au_threshold
            median = float(np.median(reference))
            row["presence_agreement"] = float(((scores > threshold) == (reference > threshold)).mean())
            row["presence_agreement_at_fp32_median"] = float(((scores > median) == (reference > median)).mean())
        else:
            row["top1_agreement"] = float((scores.argmax(1) == reference.argmax(1)).mean())
        measured[name] = row
        print(f"  {name}: {row['images_per_second']:.2f} images/s", flush=True)
        del pipe
    return {
        "task": options.task,
        "model": "CLEFConfig() defaults: ViT-B/16 224 px image encoder, 12-layer 512-wide text encoder, random weights",
        "num_faces": len(faces),
        "batch_size": options.batch_size,
        "repeats": options.repeats,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "variants": measured,
    }


def print_table(report: dict) -> None:
    agreement_keys = [key for key in next(iter(report["variants"].values())) if "agreement" in key]
    header = ["variant", "images/s", "speed-up", *agreement_keys, "max |Δscore|"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    base = report["variants"]["fp32"]["images_per_second"]
    for name, row in report["variants"].items():
        cells = [name, f"{row['images_per_second']:.2f}", f"{row['images_per_second'] / base:.2f}x"]
        cells += [f"{row[key]:.3f}" for key in agreement_keys] + [f"{row['max_abs_score_difference']:.4f}"]
        print(" | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("au", "expression"), default="au")
    parser.add_argument("--num_faces", "--num-faces", type=int, default=16)
    parser.add_argument("--batch_size", "--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", help="write the measurements to this JSON file")
    options = parser.parse_args()
    report = run_benchmark(options)
    print_table(report)
    write_report(report, options.output)


if __name__ == "__main__":
    main()

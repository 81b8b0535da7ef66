"""How CLEF inference cost grows, on the CPU (or a GPU with `--device cuda`): with the batch size (time and peak memory of the image path), with the number
of labels (the model's own `label_embeddings` rows, zero-shot `candidate_labels` through our pipeline, and through
transformers' `zero-shot-image-classification` pipeline), and with the number of images scored against a fixed label
set, where the label-embedding path stays flat per image because the label texts are encoded once.

Most measurements use a small but real configuration so that the run is quick on 2 shared cores: a 6-layer 384-wide
ViT/16 at 112 px (ViT-S/16 widths, half its depth, 7 x 7 patches) and a 4-layer 256-wide text encoder with 256-d
projections, random weights. One batch-size point uses the paper's default size (`CLEFConfig()`: ViT-B/16 at 224 px,
12-layer 512-wide text encoder).

    HF_HUB_OFFLINE=1 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/scaling.py \
        --output benchmarks/results/scaling.json

What is measured:

- batch size: the pipeline's image path on preprocessed pixels (`get_image_features`, L2-normalise, cosine with the
  12 AU label embeddings), no_grad; seconds per batch (best of `--repeats`; 2 at most for the ViT-B/16 point), per
  image, and the peak memory of the tensors it allocates, in a separate untimed pass: every storage that a torch op
  creates is counted until it is freed (a `TorchDispatchMode`), so the number is the activations' high-water mark
  above the weights and inputs, not the process's RSS (kernel scratch buffers are not seen).
- number of labels L: seconds per image and peak tensor memory for N faces through (a) our pipeline with a model
  whose `label_embeddings` has L rows, (b) our pipeline with L `candidate_labels` (first call, which encodes the
  texts once, and a second call, which finds them cached), (c) transformers' zero-shot pipeline with L
  `candidate_labels`; with how many times the text encoder ran and how many texts it encoded (a forward hook on the
  text tower).
- number of images N: (a) the scoring step alone, N precomputed image embeddings against L precomputed label
  embeddings (one matmul), microseconds per image; (b) our pipeline with L candidate labels (a fresh pipeline per
  N, so each count includes its one text encoding) and the zero-shot pipeline, on N faces (best of 2 at most).
"""

import argparse
import math
import os
import platform
import resource
import time
import weakref

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.data import lfw_subset  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, pipeline  # noqa: E402

from benchmark_report import write_report  # noqa: E402
from clef_hf import CLEFConfig, CLEFModel, CLEFProcessor, FacialBehaviorPipeline, train_clip_tokenizer  # noqa: E402
from clef_hf.vocabulary import ACTION_UNITS, NAME_TEMPLATE, au_labels, fill_template  # noqa: E402

SMALL = {
    "vision_config": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
                      "num_attention_heads": 6, "image_size": 112, "patch_size": 16},
    "text_config": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4},
    "projection_dim": 256,
}
TINY = {
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "image_size": 32, "patch_size": 8},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
    "projection_dim": 16,
}
TEXT_ENCODER_BATCH = 64  # CLEFModel.encode_texts' default: texts per text-encoder call


# ---------------------------------------------------------------------------------------------------- measuring


class TensorMemoryTracker(TorchDispatchMode):
    """Counts the bytes of every storage a torch op creates while active, until the storage is freed; `peak` is the
    high-water mark of those live bytes."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._sizes: dict[int, int] = {}

    def _release(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(output)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self._sizes:  # empty, or a view of a storage already counted
                continue
            self._sizes[key] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._release, key)
        return output


def peak_tensor_bytes(function) -> int:
    tracker = TensorMemoryTracker()
    with tracker:
        function()
    return tracker.peak


#: Where the models run: the CPU unless `--device cuda` (set once in `run_benchmark`).
DEVICE = torch.device("cpu")


def synchronize() -> None:
    """Wait for the GPU's queued work, so that host clocks time it (nothing to wait for on the CPU)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def best_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        synchronize()
        started = time.perf_counter()
        function()
        synchronize()
        times.append(time.perf_counter() - started)
    return min(times)


class TextEncoderCounter:
    """Counts the forward calls of a text tower and the texts (rows of `input_ids`) they encoded."""

    def __init__(self, module: nn.Module):
        self.calls = self.texts = 0
        self._handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls += 1
        self.texts += int(input_ids.shape[0]) if input_ids is not None else 0

    def reset(self) -> None:
        self.calls = self.texts = 0

    def remove(self) -> None:
        self._handle.remove()


# ---------------------------------------------------------------------------------------------------- models, data


def label_names(count: int) -> list[str]:
    """`count` distinct AU-like label names: the 12 BP4D AU names first, then every FACS name with a number."""
    names = au_labels()["label_names"]
    every = [au.name for au in ACTION_UNITS.values()]
    index = 0
    while len(names) < count:
        candidate = f"{every[index % len(every)]} {index // len(every) + 2}"
        if candidate not in names:
            names.append(candidate)
        index += 1
    return names[:count]


def build_clef(tokenizer, sizes: dict | None, num_labels: int = 12) -> CLEFModel:
    token_ids = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                 "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    sizes = dict(sizes or {})
    sizes["text_config"] = {**sizes.get("text_config", {}), **token_ids}
    names = label_names(num_labels)
    torch.manual_seed(0)
    model = CLEFModel(CLEFConfig(task="au", label_names=names, label_ids=[f"L{i}" for i in range(len(names))],
                                 **sizes)).eval()
    model.update_label_embeddings(tokenizer)
    return model


def build_clip(clef: CLEFModel) -> CLIPModel:
    config = CLIPConfig(text_config=clef.config.text_config.to_dict(),
                        vision_config=clef.config.vision_config.to_dict(), projection_dim=clef.config.projection_dim)
    torch.manual_seed(0)
    return CLIPModel(config).eval()


def face_crops(count: int, size: int, seed: int = 0) -> list[Image.Image]:
    faces = lfw_subset()[:100]
    picks = np.random.default_rng(seed).choice(len(faces), size=count, replace=count > len(faces))
    return [Image.fromarray((faces[i] * 255).round().astype(np.uint8)).convert("RGB").resize((size, size),
                                                                                             Image.BILINEAR)
            for i in picks]


def describe(sizes: dict | None) -> str:
    vision = {**CLEFConfig().vision_config.to_dict(), **(sizes or {}).get("vision_config", {})}
    text = {**CLEFConfig().text_config.to_dict(), **(sizes or {}).get("text_config", {})}
    projection = (sizes or {}).get("projection_dim", CLEFConfig().projection_dim)
    return (f"ViT {vision['num_hidden_layers']}x{vision['hidden_size']}/{vision['patch_size']} at "
            f"{vision['image_size']} px, text {text['num_hidden_layers']}x{text['hidden_size']}, projection "
            f"{projection}, random weights")


def clip_image_processor(size: int) -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


# ---------------------------------------------------------------------------------------------------- the measurements


def image_path(model: CLEFModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """The pipeline's per-batch computation (FacialBehaviorPipeline._forward for a float32 model)."""
    with torch.no_grad():
        embeds = nn.functional.normalize(model.get_image_features(pixel_values=pixel_values), dim=-1)
        return embeds @ model.label_embeddings.T / model.temperature


def batch_scaling(model: CLEFModel, batch_sizes: list[int], repeats: int, label: str) -> list[dict]:
    size = model.config.vision_config.image_size
    weights = sum(p.numel() * p.element_size() for p in model.vision_model.parameters())
    model.to(DEVICE)
    rows = []
    for batch_size in batch_sizes:
        pixels = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(batch_size)).to(DEVICE)
        image_path(model, pixels[:1])  # warm-up
        seconds = best_seconds(lambda: image_path(model, pixels), repeats)
        peak = peak_tensor_bytes(lambda: image_path(model, pixels))
        rows.append({"model": label, "batch_size": batch_size, "seconds_per_batch": seconds,
                     "ms_per_image": 1000 * seconds / batch_size, "images_per_second": batch_size / seconds,
                     "peak_activation_mib": peak / 2**20, "peak_activation_mib_per_image": peak / 2**20 / batch_size,
                     "image_tower_weights_mib": weights / 2**20})
        print(f"  batch {label} B={batch_size}: {batch_size / seconds:.1f} images/s, peak {peak / 2**20:.1f} MiB",
              flush=True)
    return rows


def timed_call(function, count: int, repeats: int, counter: TextEncoderCounter | None = None) -> dict:
    """Seconds per image (best of `repeats`) with text-encoder calls and texts per call, and peak tensor memory."""
    if counter is not None:
        counter.reset()
    seconds = best_seconds(function, repeats)
    calls = texts = None
    if counter is not None:
        calls, texts = counter.calls / repeats, counter.texts / repeats
    return {"ms_per_image": 1000 * seconds / count, "images_per_second": count / seconds,
            "text_encoder_calls_per_call": calls, "texts_encoded_per_call": texts,
            "peak_tensor_mib": peak_tensor_bytes(function) / 2**20}


def label_scaling(tokenizer, sizes: dict, label_counts: list[int], faces: list, batch_size: int,
                  repeats: int) -> list[dict]:
    processor = CLEFProcessor.from_tokenizer(tokenizer, image_size=sizes["vision_config"]["image_size"])
    rows = []
    clip_pipe = None
    for count in label_counts:
        model = build_clef(tokenizer, sizes, num_labels=count)
        counter = TextEncoderCounter(model.text_model)
        own = FacialBehaviorPipeline(model=model, processor=processor, detect_faces=False, device=DEVICE)
        own(faces[:batch_size], batch_size=batch_size)  # warm-up
        row = {"num_labels": count, "num_images": len(faces)}
        row["label_embeddings"] = timed_call(lambda: own(faces, batch_size=batch_size), len(faces), repeats, counter)

        # zero-shot through our pipeline: a fresh pipeline, whose first call encodes the L texts once
        zero_shot_own = FacialBehaviorPipeline(model=model, processor=processor, detect_faces=False, device=DEVICE)
        candidates = label_names(count)
        counter.reset()
        started = time.perf_counter()
        zero_shot_own(faces, batch_size=batch_size, candidate_labels=candidates)
        first = time.perf_counter() - started
        row["candidate_labels_first_call"] = {"ms_per_image": 1000 * first / len(faces),
                                              "text_encoder_calls_per_call": counter.calls,
                                              "texts_encoded_per_call": counter.texts}
        row["candidate_labels_cached"] = timed_call(
            lambda: zero_shot_own(faces, batch_size=batch_size, candidate_labels=candidates), len(faces), repeats,
            counter)
        counter.remove()

        if clip_pipe is None:
            clip = build_clip(model)
            image_processor = clip_image_processor(sizes["vision_config"]["image_size"])
            clip_pipe = pipeline("zero-shot-image-classification", model=clip, tokenizer=tokenizer,
                                 image_processor=image_processor, device=DEVICE)
            clip_counter = TextEncoderCounter(clip.text_model)
        prompts = fill_template(NAME_TEMPLATE, candidates)
        call = {"candidate_labels": prompts, "hypothesis_template": "{}", "batch_size": batch_size}
        clip_pipe(faces[:batch_size], **call)  # warm-up
        row["transformers_zero_shot"] = timed_call(lambda: clip_pipe(faces, **call), len(faces), repeats, clip_counter)
        rows.append(row)
        print(f"  labels L={count}: label_embeddings {row['label_embeddings']['ms_per_image']:.1f} ms/image, "
              f"candidate_labels first {row['candidate_labels_first_call']['ms_per_image']:.1f} / cached "
              f"{row['candidate_labels_cached']['ms_per_image']:.1f}, transformers zero-shot "
              f"{row['transformers_zero_shot']['ms_per_image']:.1f}", flush=True)
    return rows


def matmul_scaling(image_counts: list[int], label_counts: list[int], dim: int, repeats: int) -> list[dict]:
    """Scoring N precomputed image embeddings against L precomputed label embeddings: one matmul."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for labels in label_counts:
        label_embeds = nn.functional.normalize(torch.randn(labels, dim, generator=generator), dim=-1).to(DEVICE)
        for count in image_counts:
            image_embeds = nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=-1).to(DEVICE)
            loops = max(1, 2**16 // count)  # make each timed chunk long enough to measure

            def score():
                for _ in range(loops):
                    image_embeds @ label_embeds.T

            score()
            seconds = best_seconds(score, repeats) / loops
            rows.append({"num_labels": labels, "num_images": count, "us_per_image": 1e6 * seconds / count,
                         "seconds": seconds})
    return rows


def image_count_scaling(tokenizer, sizes: dict, image_counts: list[int], num_labels: int, batch_size: int,
                        repeats: int) -> list[dict]:
    processor = CLEFProcessor.from_tokenizer(tokenizer, image_size=sizes["vision_config"]["image_size"])
    model = build_clef(tokenizer, sizes)
    clip = build_clip(model)
    image_processor = clip_image_processor(sizes["vision_config"]["image_size"])
    clip_pipe = pipeline("zero-shot-image-classification", model=clip, tokenizer=tokenizer,
                         image_processor=image_processor, device=DEVICE)
    counter, clip_counter = TextEncoderCounter(model.text_model), TextEncoderCounter(clip.text_model)
    candidates = label_names(num_labels)
    prompts = fill_template(NAME_TEMPLATE, candidates)
    all_faces = face_crops(max(image_counts), sizes["vision_config"]["image_size"], seed=1)
    rows = []
    for count in image_counts:
        faces = all_faces[:count]
        best = math.inf
        for _ in range(repeats):  # a fresh pipeline each time: every measurement includes the one text encoding
            own = FacialBehaviorPipeline(model=model, processor=processor, detect_faces=False, device=DEVICE)
            counter.reset()
            synchronize()
            started = time.perf_counter()
            own(faces, batch_size=batch_size, candidate_labels=candidates)
            best = min(best, time.perf_counter() - started)  # the results are Python objects: the GPU is done
        own_row = {"ms_per_image": 1000 * best / count, "text_encoder_calls_per_call": counter.calls,
                   "texts_encoded_per_call": counter.texts}
        call = {"candidate_labels": prompts, "hypothesis_template": "{}", "batch_size": batch_size}
        clip_pipe(faces[:batch_size], **call)  # warm-up
        clip_row = timed_call(lambda: clip_pipe(faces, **call), count, repeats, clip_counter)
        del clip_row["peak_tensor_mib"]
        rows.append({"num_images": count, "num_labels": num_labels, "our_pipeline_candidate_labels": own_row,
                     "transformers_zero_shot": clip_row})
        print(f"  images N={count}: ours {own_row['ms_per_image']:.1f} ms/image ({own_row['texts_encoded_per_call']} "
              f"texts encoded), transformers zero-shot {clip_row['ms_per_image']:.1f} ms/image "
              f"({clip_row['texts_encoded_per_call']:.0f} texts encoded)", flush=True)
    counter.remove()
    clip_counter.remove()
    return rows


def run_benchmark(options: argparse.Namespace) -> dict:
    global DEVICE
    DEVICE = torch.device(options.device)
    load_before = [round(v, 2) for v in os.getloadavg()]
    tokenizer = train_clip_tokenizer()
    sizes = TINY if options.tiny else SMALL
    if options.tiny:
        batch_sizes, reference_batch, label_counts, image_counts = [1, 4], 4, [12, 100], [2, 4]
        matmul_images, matmul_labels, num_faces, flat_labels = [16, 256], [12, 100], 2, 100
    else:
        batch_sizes, reference_batch, label_counts, image_counts = [1, 4, 16, 64], options.reference_batch_size, \
            [12, 100, 1000], [4, 16, 64]
        matmul_images, matmul_labels, num_faces, flat_labels = [16, 256, 4096, 65536], [12, 1000], 8, 100
        if DEVICE.type == "cuda":
            batch_sizes.append(256)
    batch_size = min(options.batch_size, max(image_counts))

    print("batch size:", flush=True)
    small = build_clef(tokenizer, sizes)
    batch_rows = batch_scaling(small, batch_sizes, options.repeats, "small" if not options.tiny else "tiny")
    del small
    reference_sizes = TINY if options.tiny else None
    if not options.no_reference:
        reference = build_clef(tokenizer, reference_sizes)
        batch_rows += batch_scaling(reference, [reference_batch], min(options.repeats, 2),
                                    "ViT-B/16 (CLEFConfig() defaults)" if not options.tiny else "tiny reference")
        del reference

    print("number of labels:", flush=True)
    faces = face_crops(num_faces, sizes["vision_config"]["image_size"])
    label_rows = label_scaling(tokenizer, sizes, label_counts, faces, batch_size, options.repeats)

    print("number of images:", flush=True)
    matmul_rows = matmul_scaling(matmul_images, matmul_labels, sizes["projection_dim"], options.repeats)
    image_rows = image_count_scaling(tokenizer, sizes, image_counts, flat_labels, batch_size, min(options.repeats, 2))

    return {
        "tiny": options.tiny,
        "models": {"small": describe(sizes),
                   "reference": describe(reference_sizes) if not options.no_reference else None},
        "batch_size_for_label_and_image_sweeps": batch_size,
        "repeats": options.repeats,
        "text_encoder_batch": TEXT_ENCODER_BATCH,
        "device": "cpu" if DEVICE.type == "cpu" else torch.cuda.get_device_name(DEVICE),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "process_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batch_size_scaling": batch_rows,
        "label_count_scaling": label_rows,
        "scoring_matmul_scaling": matmul_rows,
        "image_count_scaling": image_rows,
    }


def print_tables(report: dict) -> None:
    def table(header, rows):
        print(" | ".join(header))
        print(" | ".join("---" for _ in header))
        for row in rows:
            print(" | ".join(row))
        print()

    print(f"\nsmall model: {report['models']['small']}\nreference model: {report['models']['reference']}\n")
    print("Batch size (image path on preprocessed pixels, no_grad):")
    table(["model", "batch", "s/batch", "ms/image", "images/s", "peak activations MiB", "MiB/image"],
          [[r["model"], str(r["batch_size"]), f"{r['seconds_per_batch']:.3f}", f"{r['ms_per_image']:.1f}",
            f"{r['images_per_second']:.1f}", f"{r['peak_activation_mib']:.1f}",
            f"{r['peak_activation_mib_per_image']:.2f}"] for r in report["batch_size_scaling"]])

    print(f"Number of labels (small model, {report['label_count_scaling'][0]['num_images']} faces, batch "
          f"{report['batch_size_for_label_and_image_sweeps']}; text calls / texts encoded per pipeline call):")
    rows = []
    for r in report["label_count_scaling"]:
        for key, name in (("label_embeddings", "ours, label_embeddings rows"),
                          ("candidate_labels_first_call", "ours, candidate_labels, 1st call"),
                          ("candidate_labels_cached", "ours, candidate_labels, cached"),
                          ("transformers_zero_shot", "transformers zero-shot")):
            cell = r[key]
            peak = cell.get("peak_tensor_mib")
            rows.append([str(r["num_labels"]), name, f"{cell['ms_per_image']:.1f}",
                         f"{cell['text_encoder_calls_per_call']:g} / {cell['texts_encoded_per_call']:g}",
                         "" if peak is None else f"{peak:.1f}"])
    table(["L", "path", "ms/image", "text calls / texts", "peak tensors MiB"], rows)

    print("Scoring N precomputed image embeddings against L label embeddings (matmul):")
    table(["L", "N", "us/image"], [[str(r["num_labels"]), str(r["num_images"]), f"{r['us_per_image']:.3f}"]
                                   for r in report["scoring_matmul_scaling"]])

    print("Number of images through the pipelines (fixed label set):")
    table(["N", "L", "ours ms/image", "ours texts encoded", "zero-shot ms/image", "zero-shot texts encoded"],
          [[str(r["num_images"]), str(r["num_labels"]),
            f"{r['our_pipeline_candidate_labels']['ms_per_image']:.1f}",
            f"{r['our_pipeline_candidate_labels']['texts_encoded_per_call']:g}",
            f"{r['transformers_zero_shot']['ms_per_image']:.1f}",
            f"{r['transformers_zero_shot']['texts_encoded_per_call']:g}"] for r in report["image_count_scaling"]])
    print(f"torch threads {report['torch_threads']}, load average {report['load_average_before']} -> "
          f"{report['load_average_after']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", "--batch-size", type=int, default=8,
                        help="pipeline batch size of the label and image-count sweeps")
    parser.add_argument("--reference_batch_size", "--reference-batch-size", type=int, default=16,
                        help="batch size of the ViT-B/16 point")
    parser.add_argument("--no_reference", "--no-reference", action="store_true", help="skip the ViT-B/16 point")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda; on cuda the batch sweep adds 256")
    parser.add_argument("--tiny", "--quick", action="store_true",
                        help="tiny models and few images: checks the script runs, measures nothing")
    parser.add_argument("--output", default="benchmarks/results/scaling.json",
                        help="write the measurements to this JSON file")
    options = parser.parse_args()
    if options.tiny:
        options.repeats = 1
    report = run_benchmark(options)
    print_tables(report)
    write_report(report, options.output)


if __name__ == "__main__":
    main()

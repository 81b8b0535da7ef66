"""Peak memory and time of one CLEF pre-training step, with and without gradient checkpointing
(`model.activation_checkpointing_enable()`), on the paper's ViT-B/16 (`CLEFConfig()` defaults: ViT-B/16 image encoder,
12-layer 512-wide text encoder).

One step is what `clef_hf.training.pretrain` does per batch: two augmented views of every image in one forward
(`augment_images` twice, `ContrastiveFeatures`), the text features of the batch's activities (one prompt template),
Eq. 2 (`pretraining_loss`: L_IĨ + L_IA at ε = 0.25), backward, and an AdamW step over `make_optimizer`'s parameter
groups (the logit scale frozen, as in `pretrain`). Pixels are random normalised tensors (memory and time do not depend
on the content), labels spread over BP4D's 8 activities.

Each variant runs in a fresh subprocess, so that peaks do not mix. The measured step is a steady-state step: the
AdamW state is allocated first (one optimizer step on zero gradients, a no-op update apart from weight decay), so that
parameters and optimizer state are resident when activations and gradients come on top, as in every step after the
first. Memory, per variant:
  - `ru_maxrss`: the child's lifetime peak RSS (its high-water mark, the counter `resource.getrusage` and
    `os.wait4` report; since the child restarts it between phases, see below, the lifetime peak is the largest of the
    phases' peaks, and wait4's `ru_maxrss` is kept in the JSON as the peak after the last restart);
  - the step's peak RSS, by phase: the child resets its peak (`VmHWM`, via `/proc/self/clear_refs`) after building
    and reads it after forward + backward and after the optimizer step. At small batches the optimizer step's peak
    (parameters, gradients, AdamW state and the foreach temporaries) exceeds the forward/backward one, so `ru_maxrss`
    alone hides what checkpointing changes; the forward/backward peak above the resident state (activations and
    gradients) is where it shows;
  - on CUDA, `torch.cuda.max_memory_allocated` for the same phases (peak counters reset at each boundary).
RSS counts what the allocator holds, not only live tensors: glibc's dynamic mmap threshold keeps freed blocks of up to
32 MiB in the heap, which hides part of what checkpointing frees (`--mmap_threshold 131072` fixes the threshold in
the children, so that RSS follows live memory more closely).
Step time: the whole step (forward, Eq. 2, backward, AdamW), the median of `--steps` steps after the first, or the
one step when `--steps 1` (the CPU default: a ViT-B/16 step takes seconds per image there).

Batch 64 at 224 px: on a CPU machine the script first measures small batches at 224 px (`--probe_batch_sizes`,
2, 4 and 8, one step each), fits forward/backward peak = fixed + per_image x batch for each variant, and predicts
batch 64 as the larger of that and the optimizer-step peak. If the prediction exceeds `--max_gb` (default 10 GB: the
machine is shared) or the predicted step time exceeds `--max_step_seconds`, it does not run batch 64 at 224 px and
says why; it measures batch 64 at a smaller image size instead (`--fallback_image_size`, 64 px by default) and
reports the 224 px probes as the trend. With CUDA it measures batch 64 at 224 px directly, and also pre-training
images/s in bf16 autocast and the ratio to the GPU's dense bf16 peak (model FLOPs utilisation).

    HF_HUB_OFFLINE=1 PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/pretraining_memory.py

FLOPs: per image, 2 views x 3 x forward FLOPs (forward + backward ≈ 3 forwards; recomputation under checkpointing
not counted, as usual for MFU), plus the text encoder on the batch's activity prompts (small). Forward FLOPs are
counted from the architecture (2 per multiply-add): ViT-B/16 at 224 px is 17.6 G multiply-adds, i.e. 35.1 GFLOPs.
(The often-quoted "17.6 GFLOPs" of ViT-B/16 is the multiply-add count; using it as FLOPs halves the utilisation;
the report gives both.)
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from benchmark_report import add_threads_option, use_threads, write_report

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, "benchmarks", "results", "pretraining_memory.json")

#: Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a substring of `torch.cuda.get_device_name()`; the most
#: specific names first. Vendors' data-sheet numbers; SXM parts unless the name says otherwise.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A10G": 70.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": 125.0,  # no bf16 tensor cores: fp16 peak, for reference only
    "T4": 65.0,  # likewise
}

TINY_MODEL = {
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "patch_size": 16},
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    "projection_dim": 16,
}


def bf16_peak_tflops(device_name: str) -> float | None:
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key.lower() in device_name.lower():
            return tflops
    return None


def encoder_forward_macs(hidden: int, intermediate: int, layers: int, tokens: int) -> int:
    """Multiply-adds of a pre-LN transformer encoder's forward: projections, MLP and the two attention products."""
    per_token = 4 * hidden * hidden + 2 * hidden * intermediate
    return layers * (tokens * per_token + 2 * tokens * tokens * hidden)


def vision_forward_macs(config, image_size: int) -> int:
    vision = config.vision_config
    patches = (image_size // vision.patch_size) ** 2
    embed = patches * 3 * vision.patch_size**2 * vision.hidden_size
    body = encoder_forward_macs(vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers, patches + 1)
    return embed + body + vision.hidden_size * config.projection_dim


def text_forward_macs(config, num_texts: int, length: int) -> int:
    text = config.text_config
    body = encoder_forward_macs(text.hidden_size, text.intermediate_size, text.num_hidden_layers, length)
    return num_texts * (body + text.hidden_size * config.projection_dim)


def measure_matmul_tflops(torch, size: int = 8192, repeats: int = 10) -> float:
    """The GPU's bf16 matrix-product rate measured here, as the achievable ceiling beside the data sheet's: the median
    of `repeats` products of two random `size` x `size` bf16 matrices, timed with CUDA events after three warm-ups."""
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * size**3 / statistics.median(times) / 1e12


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: `echo 5 > /proc/self/clear_refs`)."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
        return True
    except OSError:
        return False


def rss_bytes(field: str) -> int:
    """`VmRSS` (now) or `VmHWM` (this process image's peak) of /proc/self/status, in bytes."""
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------------------------------------ child process


def child(options: argparse.Namespace) -> dict:
    """One variant, in this (fresh) process: build, run `--steps` pre-training steps, report memory and time."""
    import torch
    from types import SimpleNamespace

    from clef_hf import CLEFConfig, CLEFModel, train_clip_tokenizer
    from clef_hf.losses import pretraining_loss
    from clef_hf.training.augmentation import AugmentationConfig, augment_images
    from clef_hf.training.optimization import make_optimizer
    from clef_hf.training.pretrain import ContrastiveFeatures, step_generator
    from clef_hf.vocabulary import BP4D_ACTIVITIES, fill_template

    device = torch.device(options.device)
    use_threads(options.threads)
    tokenizer = train_clip_tokenizer()
    base = TINY_MODEL if options.tiny else {}
    text_config = {**base.get("text_config", {}), "vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                   "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision_config = {**base.get("vision_config", {}), "image_size": options.image_size}
    torch.manual_seed(0)
    config = CLEFConfig(**{**base, "vision_config": vision_config, "text_config": text_config})
    model = CLEFModel(config)
    if options.checkpointing:
        model.activation_checkpointing_enable()
    model.logit_scale.requires_grad_(False)
    network = ContrastiveFeatures(model).to(device).train()
    optimizer = make_optimizer(network, SimpleNamespace(learning_rate=1e-4, text_learning_rate_factor=1.0,
                                                        layer_decay=1.0, weight_decay=0.01, adam_beta1=0.9,
                                                        adam_beta2=0.999, adam_epsilon=1e-8))
    descriptions = [activity.description for activity in BP4D_ACTIVITIES.values()]
    tokens = tokenizer(fill_template(config.activity_templates[0], descriptions), padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(options.batch_size, 3, options.image_size, options.image_size, generator=generator)
    labels = torch.arange(options.batch_size) % len(descriptions)
    augmentation = AugmentationConfig()
    temperature = config.pretraining_temperature
    bf16 = options.bf16 and device.type == "cuda"

    cuda = device.type == "cuda"
    hwm_resettable = reset_peak_rss()

    def phase_peaks() -> tuple[int, int | None]:
        """(VmHWM, CUDA peak) since the last reset; then reset both."""
        if cuda:
            torch.cuda.synchronize()
        peaks = (rss_bytes("VmHWM"), torch.cuda.max_memory_allocated() if cuda else None)
        reset_peak_rss()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        return peaks

    def step(index: int) -> dict:
        if cuda:
            torch.cuda.synchronize()
        phase_peaks()
        started = time.perf_counter()
        pixels = pixel_values.to(device, non_blocking=True)
        views = torch.cat([augment_images(pixels, step_generator(0, index, 0), augmentation),
                           augment_images(pixels, step_generator(0, index, 0), augmentation)])
        batch_labels = labels.to(device)
        present, rows = torch.unique(batch_labels, return_inverse=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            image_features, text_features = network(views, tokens["input_ids"][present.cpu()].to(device),
                                                    tokens["attention_mask"][present.cpu()].to(device))
        image_features, augmented_features = image_features.float().chunk(2)
        loss = pretraining_loss(image_features, augmented_features, text_features.float()[rows], batch_labels,
                                temperature)
        loss.backward()
        forward_backward_seconds = time.perf_counter() - started
        forward_backward = phase_peaks()  # not inside the timed span: reading /proc costs microseconds
        resumed = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        loss.item()
        if cuda:
            torch.cuda.synchronize()
        seconds = forward_backward_seconds + time.perf_counter() - resumed
        optimizer_phase = phase_peaks()
        return {"seconds": seconds, "forward_backward": forward_backward, "optimizer": optimizer_phase}

    # AdamW allocates its state on its first step. Allocate it beforehand, with zero gradients (Adam's update is then
    # 0 / (0 + eps) = 0; only the decoupled weight decay scales the weights by 1 - lr * wd), so that the measured
    # step is a steady-state step: parameters and AdamW state resident, activations and gradients on top.
    for parameter in network.parameters():
        if parameter.requires_grad:
            parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad()
    if cuda:
        torch.cuda.synchronize()
    build_peak_rss = rss_bytes("VmHWM")
    rss_after_build = rss_bytes("VmRSS")
    cuda_after_build = torch.cuda.memory_allocated() if cuda else None
    steps = [step(index) for index in range(options.steps)]
    seconds = [entry["seconds"] for entry in steps]
    result = {
        "batch_size": options.batch_size,
        "image_size": options.image_size,
        "checkpointing": bool(options.checkpointing),
        "bf16": bf16,
        "device": options.device if not cuda else torch.cuda.get_device_name(device),
        "steps": options.steps,
        "step_seconds_all": seconds,
        "step_seconds": statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0],
        "peak_rss_resettable": hwm_resettable,
        "build_peak_rss_bytes": build_peak_rss,
        "rss_after_build_bytes": rss_after_build,
        "forward_backward_peak_rss_bytes": max(entry["forward_backward"][0] for entry in steps),
        "optimizer_peak_rss_bytes": max(entry["optimizer"][0] for entry in steps),
        # ru_maxrss (kilobytes on Linux) is the process's RSS high-water mark, the same counter as VmHWM; the phase
        # resets above restart it, so the lifetime peak is the largest of the phases' peaks (build, then each
        # forward/backward and optimizer phase), which together cover the whole life of the process up to here.
        "ru_maxrss_since_last_reset_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "vision_forward_macs_per_view": vision_forward_macs(config, options.image_size),
        "text_forward_macs_per_step": text_forward_macs(config, len(descriptions), tokens["input_ids"].shape[1]),
        "torch_threads": torch.get_num_threads(),
    }
    result["step_peak_rss_bytes"] = max(result["forward_backward_peak_rss_bytes"], result["optimizer_peak_rss_bytes"])
    result["peak_rss_bytes"] = max(build_peak_rss, result["step_peak_rss_bytes"],
                                   result["ru_maxrss_since_last_reset_bytes"])
    if cuda:
        result["cuda_allocated_after_build_bytes"] = cuda_after_build
        result["cuda_forward_backward_peak_bytes"] = max(entry["forward_backward"][1] for entry in steps)
        result["cuda_optimizer_peak_bytes"] = max(entry["optimizer"][1] for entry in steps)
        result["cuda_max_allocated_bytes"] = max(result["cuda_forward_backward_peak_bytes"],
                                                 result["cuda_optimizer_peak_bytes"])
    return result


# ----------------------------------------------------------------------------------------------- parent process


def run_variant(options: argparse.Namespace, batch_size: int, image_size: int, checkpointing: bool, steps: int,
                device: str, bf16: bool = False) -> dict:
    """Run one variant in a fresh subprocess; its measurements, plus the child's ru_maxrss seen from here."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        path = handle.name
    command = [sys.executable, os.path.abspath(__file__), "--child", "--batch_size", str(batch_size),
               "--image_size", str(image_size), "--steps", str(steps), "--device", device, "--child_output", path,
               "--threads", str(options.threads)]
    command += ["--checkpointing"] if checkpointing else []
    command += ["--bf16"] if bf16 else []
    command += ["--tiny"] if options.tiny else []
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    if options.mmap_threshold:  # glibc: a fixed threshold, so freed large blocks go back to the OS at once
        environment["MALLOC_MMAP_THRESHOLD_"] = str(options.mmap_threshold)
    label = f"batch {batch_size}, {image_size} px, checkpointing {'on' if checkpointing else 'off'}" + (
        ", bf16" if bf16 else "")
    print(f"  {label} ...", end="", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
        # wait4 reaps the child and returns its own resource usage: ru_maxrss of this child alone.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            log.seek(0)
            os.unlink(path)
            print(" failed")
            raise RuntimeError(f"{label} failed (exit {process.returncode}):\n{log.read()[-3000:]}")
    with open(path) as file:
        result = json.load(file)
    os.unlink(path)
    result["child_wall_seconds"] = time.perf_counter() - started
    # The child's ru_maxrss as wait4 returns it (Linux: kilobytes): its high-water mark since its last phase reset
    # (see `child`); without the resets it would be the lifetime peak, which the child reports as peak_rss_bytes.
    result["wait4_ru_maxrss_bytes"] = usage.ru_maxrss * 1024
    if not result["peak_rss_resettable"]:  # no resets happened: wait4's ru_maxrss is the lifetime peak
        result["peak_rss_bytes"] = max(result["peak_rss_bytes"], result["wait4_ru_maxrss_bytes"])
    result["step_rss_bytes"] = result["step_peak_rss_bytes"] - result["rss_after_build_bytes"]
    message = (f" ru_maxrss {result['peak_rss_bytes'] / 2**30:.2f} GiB; step peak "
               f"{result['step_peak_rss_bytes'] / 2**30:.2f} GiB (forward/backward "
               f"{result['forward_backward_peak_rss_bytes'] / 2**30:.2f}, optimizer "
               f"{result['optimizer_peak_rss_bytes'] / 2**30:.2f}, after build "
               f"{result['rss_after_build_bytes'] / 2**30:.2f})")
    if "cuda_max_allocated_bytes" in result:
        message += f", CUDA max allocated {result['cuda_max_allocated_bytes'] / 2**30:.2f} GiB"
    print(f"{message}, step {result['step_seconds']:.2f} s", flush=True)
    return result


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through (x, y) points."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def run_benchmark(options: argparse.Namespace) -> dict:
    import torch

    cuda = torch.cuda.is_available() and not options.cpu
    device = "cuda" if cuda else "cpu"
    if options.steps is None:
        options.steps = 3 if cuda else 1
    image_size, batch = options.image_size, options.batch_size
    report = {"model": "tiny (TINY_MODEL in the script)" if options.tiny else
              "CLEFConfig() defaults: ViT-B/16 image encoder, 12-layer 512-wide text encoder",
              "target_batch_size": batch, "target_image_size": image_size, "device": device,
              "torch": torch.__version__, "cpu_count": os.cpu_count(),
              "processor": platform.processor() or platform.machine(), "max_gb": options.max_gb,
              "torch_threads_per_child": options.threads or "torch default",
              "malloc_mmap_threshold": options.mmap_threshold or "glibc default (dynamic)"}
    variants = []

    def both(batch_size: int, size: int, steps: int) -> dict:
        """Both checkpointing settings at one (batch, size), in alternating order across calls."""
        pair = {}
        order = (False, True) if len(variants) % 4 == 0 else (True, False)
        for checkpointing in order:
            result = run_variant(options, batch_size, size, checkpointing, steps, device)
            variants.append(result)
            pair["on" if checkpointing else "off"] = result
        return pair

    if cuda:
        print(f"batch {batch} at {image_size} px on {torch.cuda.get_device_name()}:", flush=True)
        both(batch, image_size, options.steps)
        report["measured_target"] = True
    else:
        probes = options.probe_batch_sizes
        print(f"probing batches {probes} at {image_size} px (CPU):", flush=True)
        for probe in probes:
            both(probe, image_size, options.probe_steps)
        # The forward/backward peak grows with the batch (activations, then gradients); the optimizer-step peak
        # (parameters, gradients, AdamW state, foreach temporaries) does not. At small batches the latter dominates.
        trend = {}
        for setting in ("off", "on"):
            probed = [v for v in variants if v["image_size"] == image_size and v["checkpointing"] == (setting == "on")]
            fixed, per_image = fit_line([(v["batch_size"], v["forward_backward_peak_rss_bytes"]) for v in probed])
            optimizer_peak = max(v["optimizer_peak_rss_bytes"] for v in probed)
            predicted = max(fixed + per_image * batch, optimizer_peak)
            trend[setting] = {"forward_backward_fixed_bytes": fixed, "forward_backward_per_image_bytes": per_image,
                              "optimizer_peak_bytes": optimizer_peak,
                              "predicted_peak_rss_bytes_at_target": predicted}
            print(f"  checkpointing {setting}: forward/backward peak ≈ {fixed / 2**30:.2f} GiB + "
                  f"{per_image / 2**20:.0f} MiB x batch, optimizer peak {optimizer_peak / 2**30:.2f} GiB "
                  f"-> batch {batch}: {predicted / 2**30:.1f} GiB", flush=True)
        seconds_per_image = max(v["step_seconds"] / v["batch_size"] for v in variants)
        trend["predicted_step_seconds_at_target"] = seconds_per_image * batch
        report["trend_at_target_image_size"] = trend
        fits = max(trend[s]["predicted_peak_rss_bytes_at_target"] for s in ("off", "on")) <= options.max_gb * 2**30
        quick = trend["predicted_step_seconds_at_target"] <= options.max_step_seconds
        report["target_fits_budget"] = fits
        report["target_fits_time"] = quick
        if fits and quick and not options.skip_target:
            if batch not in probes:
                print(f"batch {batch} at {image_size} px:", flush=True)
                both(batch, image_size, options.steps)
            report["measured_target"] = True
        else:
            size = options.fallback_image_size
            predicted_peak = max(trend[s]["predicted_peak_rss_bytes_at_target"] for s in ("off", "on"))
            reason = "; ".join(
                [f"predicted peak RSS {predicted_peak / 2**30:.1f} GiB > --max_gb {options.max_gb:g}"] * (not fits)
                + [f"predicted step {trend['predicted_step_seconds_at_target']:.0f} s > --max_step_seconds "
                   f"{options.max_step_seconds:g}"] * (not quick)
                + ["--skip_target"] * bool(options.skip_target))
            print(f"batch {batch} at {image_size} px not run ({reason}); batch {batch} at {size} px:", flush=True)
            both(batch, size, options.steps)
            report["measured_target"] = False
            report["fallback_image_size"] = size
            report["target_not_run_because"] = reason

    # Summary rows: checkpointing off vs on at each measured (batch, size).
    rows = []
    for key in sorted({(v["batch_size"], v["image_size"]) for v in variants}):
        pair = {("on" if v["checkpointing"] else "off"): v
                for v in variants if (v["batch_size"], v["image_size"]) == key}
        off, on = pair["off"], pair["on"]

        def gib(field: str) -> dict:
            return {"off": off[field] / 2**30, "on": on[field] / 2**30}

        def above_build(v: dict) -> int:  # activations and gradients over the resident parameters and AdamW state
            return v["forward_backward_peak_rss_bytes"] - v["rss_after_build_bytes"]

        row = {"batch_size": key[0], "image_size": key[1],
               "ru_maxrss_gib": gib("peak_rss_bytes"),
               "step_peak_rss_gib": gib("step_peak_rss_bytes"),
               "forward_backward_peak_rss_gib": gib("forward_backward_peak_rss_bytes"),
               "optimizer_peak_rss_gib": gib("optimizer_peak_rss_bytes"),
               "resident_after_build_gib": gib("rss_after_build_bytes"),
               "forward_backward_above_resident_gib": {"off": above_build(off) / 2**30, "on": above_build(on) / 2**30},
               "step_seconds": {"off": off["step_seconds"], "on": on["step_seconds"]},
               "images_per_second": {"off": key[0] / off["step_seconds"], "on": key[0] / on["step_seconds"]},
               "step_peak_ratio_on_to_off": on["step_peak_rss_bytes"] / off["step_peak_rss_bytes"],
               "forward_backward_above_resident_ratio_on_to_off": above_build(on) / max(1, above_build(off)),
               "time_ratio_on_to_off": on["step_seconds"] / off["step_seconds"]}
        if "cuda_max_allocated_bytes" in off:
            row["cuda_max_allocated_gib"] = gib("cuda_max_allocated_bytes")
            row["cuda_forward_backward_peak_gib"] = gib("cuda_forward_backward_peak_bytes")
            row["cuda_memory_ratio_on_to_off"] = on["cuda_max_allocated_bytes"] / off["cuda_max_allocated_bytes"]
        rows.append(row)
    report["rows"] = rows
    report["variants"] = variants

    if cuda:  # throughput in bf16 autocast, checkpointing off, and model FLOPs utilisation
        name = torch.cuda.get_device_name()
        peak = bf16_peak_tflops(name)
        measured_peak = measure_matmul_tflops(torch)
        print(f"bf16 matrix-product ceiling measured on {name}: {measured_peak:.0f} TFLOP/s "
              f"(data sheet: {peak or 'unknown'})", flush=True)
        print("bf16 throughput:", flush=True)
        runs = []
        for throughput_batch in options.throughput_batch_sizes or [batch]:
            fast = run_variant(options, throughput_batch, image_size, False, options.throughput_steps, device,
                               bf16=True)
            variants.append(fast)
            images_per_second = throughput_batch / fast["step_seconds"]
            flops_per_image = 2 * 3 * (2 * fast["vision_forward_macs_per_view"]) + 2 * 3 * fast[
                "text_forward_macs_per_step"] / throughput_batch
            achieved = images_per_second * flops_per_image / 1e12
            runs.append({
                "batch_size": throughput_batch,
                "images_per_second": images_per_second,
                "views_per_second": 2 * images_per_second,
                "model_tflops_per_image": flops_per_image / 1e12,
                "achieved_tflops": achieved,
                "cuda_max_allocated_gib": fast["cuda_max_allocated_bytes"] / 2**30,
                "mfu": achieved / peak if peak else None,
                "mfu_of_measured_matmul_peak": achieved / measured_peak,
                "mfu_if_17_6_gflops_taken_as_flops": (images_per_second * 3 * 2 * 17.6e9 / 1e12 / peak)
                if peak else None,
            })
        best = max(runs, key=lambda run: run["images_per_second"])
        report["throughput_bf16"] = {"device_name": name, "peak_bf16_tflops": peak,
                                     "measured_matmul_bf16_tflops": measured_peak, **best, "by_batch_size": runs}
    return report


def print_table(report: dict) -> None:
    header = ["batch", "px", "ckpt", "ru_maxrss GiB", "step peak GiB", "fwd/bwd peak", "optimizer peak",
              "fwd/bwd above resident", "CUDA max GiB", "step s", "images/s"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in report["rows"]:
        for setting in ("off", "on"):
            cuda = row.get("cuda_max_allocated_gib", {}).get(setting)
            print(" | ".join([str(row["batch_size"]), str(row["image_size"]), setting,
                              f"{row['ru_maxrss_gib'][setting]:.2f}", f"{row['step_peak_rss_gib'][setting]:.2f}",
                              f"{row['forward_backward_peak_rss_gib'][setting]:.2f}",
                              f"{row['optimizer_peak_rss_gib'][setting]:.2f}",
                              f"{row['forward_backward_above_resident_gib'][setting]:.2f}",
                              "-" if cuda is None else f"{cuda:.2f}", f"{row['step_seconds'][setting]:.2f}",
                              f"{row['images_per_second'][setting]:.2f}"]))
    for row in report["rows"]:
        extra = (f", CUDA max allocated {row['cuda_memory_ratio_on_to_off']:.2f}"
                 if "cuda_memory_ratio_on_to_off" in row else "")
        print(f"batch {row['batch_size']} at {row['image_size']} px, checkpointing on/off: step peak RSS "
              f"{row['step_peak_ratio_on_to_off']:.2f}, forward/backward above resident "
              f"{row['forward_backward_above_resident_ratio_on_to_off']:.2f}{extra}; step time "
              f"{row['time_ratio_on_to_off']:.2f}")
    if "trend_at_target_image_size" in report:
        trend = report["trend_at_target_image_size"]
        print(f"trend at {report['target_image_size']} px, predicted for batch {report['target_batch_size']}: "
              + ", ".join(f"checkpointing {s} {trend[s]['predicted_peak_rss_bytes_at_target'] / 2**30:.1f} GiB "
                          f"({trend[s]['forward_backward_per_image_bytes'] / 2**20:.0f} MiB per image)"
                          for s in ("off", "on"))
              + f"; {trend['predicted_step_seconds_at_target']:.0f} s per step")
    if not report.get("measured_target", True):
        print(f"NOTE: batch {report['target_batch_size']} at {report['target_image_size']} px was not measured "
              f"({report['target_not_run_because']}); batch {report['target_batch_size']} ran at "
              f"{report['fallback_image_size']} px, and the {report['target_image_size']} px rows are the trend.")
    if "throughput_bf16" in report:
        t = report["throughput_bf16"]
        for run in t["by_batch_size"]:
            mfu = ("unknown GPU peak" if run["mfu"] is None else
                   f"MFU {run['mfu']:.1%} of the data sheet's {t['peak_bf16_tflops']:.0f} TFLOP/s")
            print(f"bf16 pre-training on {t['device_name']}, batch {run['batch_size']}: "
                  f"{run['images_per_second']:.0f} images/s ({run['achieved_tflops']:.0f} TFLOP/s), {mfu}, "
                  f"{run['mfu_of_measured_matmul_peak']:.1%} of the measured matrix-product rate "
                  f"({t['measured_matmul_bf16_tflops']:.0f} TFLOP/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", "--batch-size", type=int, default=64)
    parser.add_argument("--image_size", "--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, help="steps per variant at the target batch (default: 1 CPU, 3 CUDA)")
    parser.add_argument("--probe_batch_sizes", "--probe-batch-sizes", type=int, nargs="+", default=[2, 4, 8],
                        help="CPU: batches measured at --image_size to fit the trend")
    parser.add_argument("--probe_steps", "--probe-steps", type=int, default=1)
    parser.add_argument("--throughput_steps", "--throughput-steps", type=int, default=12)
    parser.add_argument("--throughput_batch_sizes", "--throughput-batch-sizes", type=int, nargs="+",
                        help="CUDA: batches at which bf16 images/s is measured (default: --batch_size alone)")
    parser.add_argument("--max_gb", "--max-gb", type=float, default=10.0,
                        help="run batch 64 at 224 px on the CPU only if its predicted peak RSS is below this")
    parser.add_argument("--max_step_seconds", "--max-step-seconds", type=float, default=150.0,
                        help="run batch 64 at 224 px on the CPU only if one step is predicted to take less")
    parser.add_argument("--fallback_image_size", "--fallback-image-size", type=int, default=64)
    parser.add_argument("--skip_target", "--skip-target", action="store_true",
                        help="on the CPU, use the fallback image size even if the target would fit (time)")
    parser.add_argument("--mmap_threshold", "--mmap-threshold", type=int, default=0,
                        help="set MALLOC_MMAP_THRESHOLD_ (bytes, e.g. 131072) in the children: glibc then returns "
                             "freed large blocks to the OS at once, and RSS follows live memory more closely (by "
                             "default its dynamic threshold keeps freed blocks of up to 32 MiB resident)")
    parser.add_argument("--cpu", action="store_true", help="measure on the CPU even if CUDA is available")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run: a tiny model, tiny batches")
    add_threads_option(parser)
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="write the measurements to this JSON file")
    # Child-process options (internal).
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--child_output", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        result = child(options)
        with open(options.child_output, "w") as file:
            json.dump(result, file)
        return
    if options.tiny:
        options.batch_size, options.image_size, options.fallback_image_size = 4, 32, 32
        options.probe_batch_sizes, options.probe_steps, options.steps, options.throughput_steps = [2, 4], 1, 1, 2
    report = run_benchmark(options)
    print_table(report)
    write_report(report, options.output)


if __name__ == "__main__":
    main()

"""The vision-side measurements of docs/diagnosis.md (section 9): does the demo's ViT lack steps, or identities?

Plain PyTorch, to keep the text side out of it: the demo model's image encoder (`configs/demo_model.json`'s
`vision_config`, a `transformers.CLIPVisionModel` from random init) with a linear head on the pooled output, trained
with BCE (AUs, positives weighted by sqrt(negatives / positives)) or cross-entropy (expressions), AdamW, one warm-up
epoch and cosine decay, mirroring and brightness/contrast jitter, batches drawn with replacement. Its AU figure at
the demo's budget (800 steps, test 0.454) is near the library's row "random init -> stage 2 (I)" at 10 epochs (0.470).

The data are the demo's split (28 subjects: 20 train, 4 validation, 4 test); `--extra N` adds the faces of N other
subjects (1000 and up, 16 frames per activity) to the training set, with their labels: an upper bound of what a
pre-training stage on other identities can give. The epoch (every 80 steps) and the AU threshold are chosen on
validation; the test split is scored once. One torch thread.

    python benchmarks/identities_vs_steps.py --steps 8000                # 20 identities: val 0.590, test AU F1 0.509
    python benchmarks/identities_vs_steps.py --steps 8000 --extra 150    # 170 identities: val 0.842, test AU F1 0.775
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel

from clef_hf import CLEFConfig
from clef_hf.training.recipes import SYNTHFACES_MODEL_CONFIG
from dataset_builders import build_dataset

DATA = {"num_subjects": 28, "num_validation_subjects": 4, "num_test_subjects": 4, "frames_per_activity": 16, "seed": 0}
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
EVAL_EVERY = 80


def arrays(split, size: int) -> dict:
    pixels = np.stack([np.asarray(image.convert("RGB").resize((size, size))) for image in split["image"]])
    return {"pixels": (torch.tensor(pixels).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD,
            "au": torch.tensor(np.array(split["au"])).float(), "expression": torch.tensor(split["expression"])}


def jitter(pixels: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(len(pixels)) < 0.5
    pixels = torch.where(flip.view(-1, 1, 1, 1), pixels.flip(3), pixels)
    scale = 1 + (torch.rand(len(pixels), 1, 1, 1) - 0.5) * 0.5
    return pixels * scale + (torch.rand(len(pixels), 1, 1, 1) - 0.5) * 0.5


def f1_per_label(probabilities: torch.Tensor, truth: torch.Tensor, threshold: float) -> torch.Tensor:
    predicted = (probabilities > threshold).float()
    tp, fp = (predicted * truth).sum(0), (predicted * (1 - truth)).sum(0)
    fn = ((1 - predicted) * truth).sum(0)
    return 2 * tp / (2 * tp + fp + fn).clamp(min=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=["au", "expression"], default="au")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--extra", type=int, default=0, help="labelled faces of this many other subjects")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--work_dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = CLEFConfig.from_json_file(SYNTHFACES_MODEL_CONFIG).vision_config
    with tempfile.TemporaryDirectory() as scratch:
        cache = os.path.join(args.work_dir or scratch, "data")
        splits = build_dataset("synthfaces", cache_dir=cache, **DATA)
        data = {name: arrays(splits[name], config.image_size) for name in ("train", "validation", "test")}
        if args.extra:
            extra = arrays(build_dataset("synthfaces", cache_dir=cache, first_subject=1000, num_subjects=args.extra,
                                         num_test_subjects=0, frames_per_activity=16, seed=0)["train"],
                           config.image_size)
            data["train"] = {key: torch.cat([data["train"][key], extra[key]]) for key in extra}
    labels = {name: split[args.task] for name, split in data.items()}
    outputs = labels["train"].shape[1] if args.task == "au" else int(labels["train"].max()) + 1
    encoder, head = CLIPVisionModel(config), nn.Linear(config.hidden_size, outputs)
    parameters = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / EVAL_EVERY) * 0.5 * (
        1 + np.cos(np.pi * min(1.0, step / args.steps))))
    prior = labels["train"].float().mean(0).clamp(0.02, 0.98) if args.task == "au" else None
    pos_weight = ((1 - prior) / prior).sqrt() if prior is not None else None

    def scores(name: str) -> torch.Tensor:
        encoder.eval()
        with torch.no_grad():
            logits = torch.cat([head(encoder(pixel_values=data[name]["pixels"][start:start + 256]).pooler_output)
                                for start in range(0, len(data[name]["pixels"]), 256)])
        encoder.train()
        return logits

    def metric(name: str, threshold: float | None = None):
        logits = scores(name)
        if args.task == "expression":
            return (logits.argmax(1) == labels[name]).float().mean().item(), None, None
        probabilities = torch.sigmoid(logits)
        if threshold is None:
            grid = np.arange(0.1, 0.91, 0.05)
            threshold = float(grid[int(np.argmax([f1_per_label(probabilities, labels[name], t).mean() for t in grid]))])
        per_label = f1_per_label(probabilities, labels[name], threshold)
        return per_label.mean().item(), threshold, per_label

    started, generator, best, history = time.perf_counter(), torch.Generator().manual_seed(0), None, []
    for step in range(args.steps):
        index = torch.randint(0, len(labels["train"]), (args.batch_size,), generator=generator)
        logits = head(encoder(pixel_values=jitter(data["train"]["pixels"][index])).pooler_output)
        target = labels["train"][index]
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight) if args.task == "au" \
            else F.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % EVAL_EVERY == 0 or step + 1 == args.steps:
            value, threshold, _ = metric("validation")
            history.append(round(value, 3))
            if best is None or value > best[0]:
                best = (value, step + 1, threshold, {k: v.clone() for k, v in encoder.state_dict().items()},
                        {k: v.clone() for k, v in head.state_dict().items()})
    encoder.load_state_dict(best[3])
    head.load_state_dict(best[4])
    test, _, per_label = metric("test", best[2])
    print(json.dumps({"task": args.task, "steps": args.steps, "training_subjects": 20 + args.extra,
                      "training_faces": len(labels["train"]), "validation": round(best[0], 3), "best_step": best[1],
                      "test": round(test, 3), "per_label_test": None if per_label is None else
                      [round(v, 2) for v in per_label.tolist()], "validation_history": history,
                      "seconds": round(time.perf_counter() - started)}))


if __name__ == "__main__":
    main()

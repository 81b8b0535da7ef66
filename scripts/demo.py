"""`make demo`: a small end-to-end run of the CLEF model package on CPU, in well under a minute.

Until the training issue lands (#4, which replaces this with pre-training and fine-tuning on the synthetic faces), the
main job exercises every piece of the package: it trains a tokenizer offline, builds a small CLEF model for the 12
BP4D AUs, computes every loss of the paper (Eq. 1-6) on a batch of images, takes a few optimisation steps on the
fine-tuning loss, saves the model and processor, loads them back with `AutoModel`/`AutoProcessor` and checks that the
predictions are identical.

The images are random noise: the numbers show that the losses are wired correctly and decrease when optimised, not
that anything about faces is learned.
"""

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor

from clef_hf import CLEFConfig, CLEFModel, CLEFProcessor, pretraining_loss, train_clip_tokenizer
from clef_hf.vocabulary import BP4D_ACTIVITIES, au_labels, fill_template


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    output_dir = Path(args.output_dir)

    tokenizer = train_clip_tokenizer()
    text_config = {
        "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "image_size": args.image_size, "patch_size": 16,
    }
    config = CLEFConfig(vision_config=vision_config, text_config=text_config, projection_dim=64, task="au",
                        **au_labels())
    model = CLEFModel(config)
    processor = CLEFProcessor.from_tokenizer(tokenizer, image_size=args.image_size)

    batch_size, num_aus = 16, len(config.label_names)
    pixels = torch.randn(batch_size, 3, args.image_size, args.image_size)
    activities = torch.arange(batch_size) % 4
    au_targets = torch.randint(0, 2, (batch_size, num_aus))
    au_targets[0, :3] = -1  # unknown labels are ignored by Eq. 5

    # Eq. 1-2: two views (here the image and its mirror), and activity texts.
    tasks = list(BP4D_ACTIVITIES.values())
    activity_prompts = fill_template(config.activity_templates[0], [tasks[int(a)].description for a in activities])
    texts = tokenizer(activity_prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        loss_pre = pretraining_loss(
            model.get_image_features(pixels), model.get_image_features(pixels.flip(-1)),
            model.get_text_features(**texts), activities, config.pretraining_temperature,
        )

    # Eq. 3-6 through the text encoder, optimised for a few steps.
    names = tokenizer(fill_template(config.name_template, config.label_names), padding=True, return_tensors="pt")
    descriptions = tokenizer(fill_template(config.description_templates[0], config.label_descriptions),
                             padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    history = []
    model.train()
    for _ in range(args.steps):
        output = model(
            pixel_values=pixels, labels=au_targets,
            name_input_ids=names["input_ids"], name_attention_mask=names["attention_mask"],
            description_input_ids=descriptions["input_ids"], description_attention_mask=descriptions["attention_mask"],
        )
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append({key: getattr(output, key).item() for key in ("loss", "image_name_loss", "name_description_loss")})

    model.eval()
    model.update_label_embeddings(tokenizer)
    model_dir = output_dir / "au-model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    reloaded = AutoModel.from_pretrained(model_dir).eval()
    reloaded_processor = AutoProcessor.from_pretrained(model_dir)
    with torch.no_grad():
        identical = torch.equal(model(pixel_values=pixels).logits, reloaded(pixel_values=pixels).logits)
    if not identical or type(reloaded_processor) is not CLEFProcessor:
        raise SystemExit(f"Round trip through {model_dir} changed the model's predictions.")

    results = {
        "pretraining_loss_eq2": float(loss_pre),
        "fine_tuning_first": history[0],
        "fine_tuning_last": history[-1],
        "steps": args.steps,
        "round_trip_identical": identical,
        "model_dir": str(model_dir),
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"{'quantity':<36}{'first step':>12}{'last step':>12}")
    for key, label in (("loss", "fine-tuning loss (Eq. 6)"), ("image_name_loss", "AU image-name loss (Eq. 5)"),
                       ("name_description_loss", "name-description loss (Eq. 3)")):
        print(f"{label:<36}{history[0][key]:>12.4f}{history[-1][key]:>12.4f}")
    print(f"{'pre-training loss (Eq. 2)':<36}{float(loss_pre):>12.4f}")
    print(f"saved {model_dir}; reloaded with AutoModel/AutoProcessor: identical logits = {identical}")


if __name__ == "__main__":
    main()

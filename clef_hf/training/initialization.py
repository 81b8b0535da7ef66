"""Where a training run's weights and processor come from: a CLEF checkpoint (e.g. stage 1's output), a CLIP
checkpoint in transformers' format (OpenAI CLIP, or FaRL after conversion), or a `CLEFConfig` JSON for a model
trained from scratch with the package's own tokenizer. Also the label set a fine-tuning split implies."""

import json
import os

import datasets
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

from ..bpe_tokenizer import train_clip_tokenizer
from ..configuration_clef import CLEFConfig
from ..modeling_clef import CLEFModel
from ..processing_clef import CLEFProcessor
from ..vocabulary import au_labels, expression_labels


def labels_of_split(split: datasets.Dataset, task: str) -> dict[str, list[str]]:
    """`label_ids`, `label_names` and `label_descriptions` for the labels of `split`, in its column order."""
    if task == "au":
        from dataset_builders import au_ids_of

        au_ids = au_ids_of(split)
        bad = [au_id for au_id in au_ids if not (au_id.startswith("AU") and au_id[2:].isdigit())]
        if bad:
            raise ValueError(f"The split's au_ids {bad} are not of the form AU<number>.")
        return au_labels([int(au_id[2:]) for au_id in au_ids])
    if task == "expression":
        feature = split.features["expression"]
        if not isinstance(feature, datasets.ClassLabel):
            raise ValueError(f"The expression column must be a ClassLabel, got {feature}.")
        return expression_labels(feature.names)
    raise ValueError(f"task must be 'au' or 'expression', got {task!r}.")


def _model_type(path: str) -> str | None:
    config_path = os.path.join(path, "config.json")
    if os.path.isdir(path) and not os.path.isfile(config_path):
        raise ValueError(f"{path} is a folder without config.json: it is not a CLEF or CLIP checkpoint.")
    if os.path.isfile(config_path):
        with open(config_path) as file:
            return json.load(file).get("model_type")
    return CLEFConfig.get_config_dict(path)[0].get("model_type")  # a Hub id


def load_model_and_processor(
    model_name_or_path: str | None = None,
    config_file: str | None = None,
    task: str | None = None,
    labels: dict[str, list[str]] | None = None,
    class_weights: list[float] | None = None,
    au_intensity: bool = False,
) -> tuple[CLEFModel, CLEFProcessor]:
    """The initial model of a training run, with `task` and `labels` set, and its processor.

    Args:
        model_name_or_path: a CLEF checkpoint or a CLIP checkpoint (`model_type` "clef" or "clip").
        config_file: a `CLEFConfig` JSON to train from scratch; its text vocabulary is set from the package tokenizer.
        task: "au", "expression", or None for pre-training.
        labels: `label_ids` / `label_names` / `label_descriptions` (empty for pre-training).
        class_weights: the w_c of Eq. 4-5, stored in the config.
        au_intensity: an AU model that also scores intensity (`CLEFConfig.au_intensity`).
    """
    labels = labels or {"label_ids": [], "label_names": [], "label_descriptions": []}
    if config_file is not None:
        tokenizer = train_clip_tokenizer()
        with open(config_file) as file:
            config_dict = json.load(file)
        config_dict["text_config"] = {
            **config_dict.get("text_config", {}),
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        config_dict.update(task=task, class_weights=class_weights, au_intensity=au_intensity, **labels)
        model = CLEFModel(CLEFConfig(**config_dict))
        processor = CLEFProcessor.from_tokenizer(tokenizer, image_size=model.config.vision_config.image_size)
    else:
        model_type = _model_type(model_name_or_path)
        if model_type == "clef":
            model = CLEFModel.from_pretrained(model_name_or_path)
            model.set_labels(task, class_weights=class_weights, au_intensity=au_intensity, **labels)
            processor = CLEFProcessor.from_pretrained(model_name_or_path)
        elif model_type == "clip":
            model = CLEFModel.from_clip(
                CLIPModel.from_pretrained(model_name_or_path), task=task, class_weights=class_weights,
                au_intensity=au_intensity, **labels
            )
            processor = CLEFProcessor(
                image_processor=AutoImageProcessor.from_pretrained(model_name_or_path),
                tokenizer=AutoTokenizer.from_pretrained(model_name_or_path),
            )
        else:
            raise ValueError(
                f"{model_name_or_path} has model_type {model_type!r}; expected a CLEF ('clef') or CLIP ('clip') "
                "checkpoint. Convert FaRL or OpenAI CLIP .pth files with scripts/convert_farl.py first."
            )
    processor.check_fits(model.config.text_config)
    return model, processor


__all__ = ["labels_of_split", "load_model_and_processor"]

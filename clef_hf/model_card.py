"""Model cards for trained CLEF checkpoints: `render_model_card` turns a saved model folder into a
`huggingface_hub.ModelCard` with structured metadata (task tags, data set, metrics as `EvalResult`s) and the text of
`model_cards/clef_model_card_template.md` (labels, intended use, limitations and ethics, training data, evaluation,
how to use, citation).

The folder is what `clef_hf.training.finetune.save_best` writes: `config.json` (task, labels, name template),
`model.safetensors`, the processor files, and, when present, `training_args.json` and `eval_results.json`. Without
the last two the card says that the training data or the evaluation are not recorded.

The template ships inside the package as `clef_hf/templates/model_card.md`, an identical copy of
`model_cards/clef_model_card_template.md` (a test keeps the two the same), so that rendering works after
`pip install` too.

    from clef_hf.model_card import render_model_card
    card = render_model_card("outputs/bp4d-fold1/best", "me/clef-bp4d-fold1")
    card.save("outputs/bp4d-fold1/best/README.md")
"""

import json
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from huggingface_hub import EvalResult, ModelCard, ModelCardData

#: The Hub has no facial-behaviour pipeline tag; image-classification is the closest and makes the widget usable.
PIPELINE_TAG = "image-classification"
TASK_TAGS = {"au": "facial-action-units", "expression": "facial-expression-recognition"}
TASK_TITLES = {"au": "facial action unit detection", "expression": "facial expression recognition"}
BASE_TAGS = ("clef", "affective-computing")
#: The headline metrics of `eval_results.json` by task: key -> (Hub metric type, name shown on the Hub).
HEADLINE_METRICS = {
    "au": {"mean_f1": ("f1", "mean F1 over AUs")},
    "expression": {"accuracy": ("accuracy", "accuracy"), "mean_class_accuracy": ("accuracy", "mean class accuracy")},
}
#: Digits kept for metric values in the card (metadata and text); eval_results.json keeps all.
METRIC_DIGITS = 4
#: The fine-tuning objectives (`FineTuningArguments.objective`) as the card names them.
OBJECTIVE_NAMES = {
    "clef": "CLEF (Zhang et al., ICCV 2023), stage 2",
    "cl_ile": "CL-ILE (Lian et al., BMVC 2023): identity-label embeddings, then orthogonal general features",
}
#: Training arguments shown in the card's training table: key -> row name.
TRAINING_ROWS = {
    "model_name_or_path": "initial weights",
    "config_file": "trained from scratch with the configuration",
    "objective": "fine-tuning objective",
    "components": "fine-tuning components (Table 6 of the paper)",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch size per device",
    "gradient_accumulation_steps": "gradient accumulation steps",
    "learning_rate": "peak learning rate",
    "weight_decay": "weight decay",
    "mixed_precision": "mixed precision",
    "seed": "seed",
}


@dataclass(frozen=True)
class DatasetInfo:
    """What the card says about a data set the package has a builder for."""

    title: str
    #: "lab" (recorded in a laboratory), "wild" (images from the internet) or "synthetic".
    setting: str
    reference: str | None = None


DATASETS: dict[str, DatasetInfo] = {
    "bp4d": DatasetInfo(
        "BP4D", "lab",
        'X. Zhang et al., "BP4D-Spontaneous: a high-resolution spontaneous 3D dynamic facial expression database", '
        "Image and Vision Computing 32(10), 2014.",
    ),
    "bp4d_plus": DatasetInfo(
        "BP4D+", "lab",
        'Z. Zhang et al., "Multimodal spontaneous emotion corpus for human behavior analysis", CVPR 2016.',
    ),
    "disfa": DatasetInfo(
        "DISFA", "lab",
        'S. M. Mavadati et al., "DISFA: A spontaneous facial action intensity database", IEEE Transactions on '
        "Affective Computing 4(2), 2013.",
    ),
    "raf_db": DatasetInfo(
        "RAF-DB (basic)", "wild",
        'S. Li, W. Deng and J. Du, "Reliable crowdsourcing and deep locality-preserving learning for expression '
        'recognition in the wild", CVPR 2017.',
    ),
    "affectnet": DatasetInfo(
        "AffectNet", "wild",
        'A. Mollahosseini, B. Hasani and M. H. Mahoor, "AffectNet: A database for facial expression, valence, and '
        'arousal computing in the wild", IEEE Transactions on Affective Computing 10(1), 2019.',
    ),
    "ferplus": DatasetInfo(
        "FERPlus", "wild",
        'E. Barsoum et al., "Training deep networks for facial expression recognition with crowd-sourced label '
        'distribution", ICMI 2016.',
    ),
    "synthfaces": DatasetInfo("synthfaces", "synthetic"),
}

DATA_SETTING_TEXT = {
    "lab": (
        "{title} was recorded in a laboratory: relatively few participants, frontal faces, controlled lighting and "
        "elicited (not everyday) situations. Expect lower accuracy on faces in everyday conditions (other poses, "
        "lighting, occlusion, image quality, age groups and ethnicities)."
    ),
    "wild": (
        "{title} consists of face images collected from the internet and labelled by annotators. It covers more "
        "conditions than laboratory data, but over-represents posed, exaggerated expressions and the people who "
        "appear in online photos, and its labels are annotators' judgements; subtle, spontaneous behaviour and "
        "under-represented groups may be recognised less well."
    ),
    "synthetic": (
        "{title} are cartoon-like faces drawn procedurally by clef-hf, with known labels, made to test the software. "
        "A model trained on them is a demonstration only: it says nothing reliable about real faces."
    ),
    "unknown": (
        "The training data set ({title}) is not one the package knows. Check under which conditions it was collected "
        "(laboratory recordings or images from the wild, which people) before using the model elsewhere."
    ),
}
DATA_LICENSE_TEXT = {
    "synthetic": "The synthetic training data carry no third-party licence terms.",
    "known": (
        "{title} is distributed under its own agreement, usually for non-commercial research only. The licence "
        "in this card's metadata covers the code and the weights as far as their authors can grant it; check the "
        "data set's terms before you use or redistribute a model trained on it."
    ),
    "unknown": (
        "Facial-behaviour data sets are usually distributed under agreements for non-commercial research only. The "
        "licence in this card's metadata covers the code and the weights as far as their authors can grant it; "
        "check the training data's terms before you use or redistribute this model."
    ),
}
TRAINING_MISSING_TEXT = (
    "Not recorded: the model folder had no `training_args.json`, so the training data, folds and settings of this "
    "model are unknown. Models fine-tuned with `scripts/finetune.py` save that file next to the weights."
)
EVALUATION_MISSING_TEXT = (
    "Not recorded: the model folder had no `eval_results.json`, so this model has not been evaluated here. Evaluate it "
    "with `scripts/evaluate_model.py` on a held-out, subject-exclusive split before you rely on it."
)


def template_path() -> Path:
    """The packaged template, `clef_hf/templates/model_card.md` (a copy of model_cards/clef_model_card_template.md)."""
    return Path(str(resources.files("clef_hf").joinpath("templates", "model_card.md")))


def read_json_object(path: Path, required: bool = True) -> dict | None:
    """The JSON object in `path`; None if it is absent and not `required`. Errors name the file."""
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{path} is missing: a saved CLEF model folder holds its config.json.")
        return None
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return round(value, METRIC_DIGITS)
    return value


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{METRIC_DIGITS}f}" if math.isfinite(value) else str(value)
    return str(value)


def _md(text: Any) -> str:
    """A value safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _labels(config: dict, config_path: Path) -> list[dict[str, str]]:
    names = config.get("label_names") or []
    if not names:
        raise ValueError(
            f"{config_path} has no label_names: a pre-trained CLEF model without a label set has no model card for "
            "AU detection or expression recognition; fine-tune it first."
        )
    ids = config.get("label_ids") or names
    descriptions = config.get("label_descriptions") or [""] * len(names)
    if not len(ids) == len(names) == len(descriptions):
        raise ValueError(f"{config_path}: label_ids, label_names and label_descriptions have different lengths.")
    return [{"id": _md(i), "name": _md(n), "description": _md(d)} for i, n, d in zip(ids, names, descriptions)]


def _dataset_info(name: str | None) -> tuple[str, DatasetInfo | None]:
    if not name:
        return "an unknown data set", None
    info = DATASETS.get(name)
    return (info.title if info else name), info


def _fold_note(dataset: str | None, config_name: str | None, train_split: str, eval_split: str) -> str:
    if dataset in ("bp4d", "disfa") and config_name in ("fold1", "fold2", "fold3"):
        fold = int(config_name[-1])
        test_part = {1: 3, 2: 2, 3: 1}[fold]
        train_parts = " and ".join(str(p) for p in (1, 2, 3) if p != test_part)
        return (
            f"The folds are the standard subject-exclusive three-fold protocol (EAC-Net, JAA-Net, ME-GraphAU): "
            f"{config_name} trains on parts {train_parts} and tests on part {test_part}, so no test subject is seen "
            "in training. Papers report the mean over the three folds; this model is one fold."
        )
    if dataset == "bp4d_plus" and config_name and config_name.startswith("fold"):
        return (
            f"{config_name} is one of clef-hf's four subject-exclusive BP4D+ folds (subjects sorted by id and dealt "
            "round-robin; the paper's split is not published as subject lists)."
        )
    if dataset == "synthfaces":
        return "The synthfaces test split holds subjects that are not in the training split."
    if train_split == eval_split:
        return f"Training and evaluation used the same split (`{train_split}`): the evaluation is not held out."
    return ""


def _training_section(training_args: dict | None, eval_results: dict | None) -> dict | None:
    if training_args is None:
        return None
    dataset = training_args.get("dataset")
    if dataset and os.sep in str(dataset):
        dataset = os.path.basename(os.path.normpath(dataset))  # a saved DatasetDict folder: its name
    title, info = _dataset_info(dataset)
    train_split = training_args.get("train_split", "train")
    eval_split = training_args.get("eval_split") or (eval_results or {}).get("split") or "test"
    rows = []
    for key, name in TRAINING_ROWS.items():
        value = training_args.get(key)
        if value is None or value == "":
            continue
        if key == "components" and training_args.get("objective") == "cl_ile":
            continue  # CLEF's Table 6 components do not apply to CL-ILE
        if key == "objective":
            value = OBJECTIVE_NAMES.get(value, value)
        if key in ("model_name_or_path", "config_file"):
            value = f"`{value}`"
        rows.append({"name": name, "value": _md(value)})
    if training_args.get("dataset_options"):
        rows.append({"name": "builder options", "value": _md(f"`{training_args['dataset_options']}`")})
    notes = _fold_note(dataset, training_args.get("dataset_config"), train_split, eval_split)
    return {
        "dataset": _md(dataset or "unknown"),
        "dataset_title": _md(title),
        "dataset_config": _md(training_args.get("dataset_config") or "default"),
        "dataset_reference": info.reference if info else None,
        "train_split": _md(train_split),
        "eval_split": _md(eval_split),
        "rows": rows,
        "notes": notes,
    }


def _evaluation_section(
    task: str, eval_results: dict | None, labels: list[dict[str, str]], training_args: dict | None
) -> dict | None:
    if eval_results is None:
        return None
    dataset = eval_results.get("dataset") or (training_args or {}).get("dataset")
    title, _ = _dataset_info(dataset)
    split = eval_results.get("split") or (training_args or {}).get("eval_split") or "unknown"
    config_name = (training_args or {}).get("dataset_config")
    where = f"the `{_md(split)}` split of {_md(title)}" + (f" ({_md(config_name)})" if config_name else "")
    epoch = eval_results.get("epoch")
    summary = f"Evaluated on {where}" + (f" after epoch {epoch}" if epoch is not None else "") + "."

    headline = [
        {"name": name, "value": _format(_round(eval_results[key]))}
        for key, (_, name) in HEADLINE_METRICS[task].items()
        if isinstance(eval_results.get(key), (int, float))
    ]
    per_label_key, per_label_metric = ("per_label_f1", "F1") if task == "au" else ("per_label_accuracy", "accuracy")
    per_label_values = eval_results.get(per_label_key) or {}
    names = {label["id"]: label["name"] for label in labels}
    support = eval_results.get("support")
    has_support = isinstance(support, list) and len(support) == len(per_label_values)
    per_label = [
        {"id": _md(key), "name": names.get(_md(key), ""), "value": _format(_round(value)),
         "support": support[index] if has_support else ""}
        for index, (key, value) in enumerate(per_label_values.items())
    ]
    confusion = None
    matrix = eval_results.get("confusion_matrix")
    if task == "expression" and isinstance(matrix, list) and matrix:
        ids = list(per_label_values) if len(per_label_values) == len(matrix) else [label["id"] for label in labels]
        if len(ids) == len(matrix):
            confusion = {
                "labels": [_md(i) for i in ids],
                "rows": [{"label": _md(i), "counts": row} for i, row in zip(ids, matrix)],
            }
    if training_args and training_args.get("eval_split") == split and epoch is not None:
        caveat = (
            "The checkpoint is the epoch with the best score on this same split, so the numbers are "
            "optimistic for unseen data (model selection on the evaluation split)."
        )
    else:
        caveat = ""
    if not headline and not per_label:
        caveat = (caveat + " " if caveat else "") + "eval_results.json holds no metric the card knows."
    return {
        "summary": summary,
        "headline": headline,
        "per_label": per_label,
        "per_label_metric": per_label_metric,
        "has_support": has_support,
        "confusion": confusion,
        "caveat": caveat,
    }


def _eval_results(task: str, eval_results: dict | None, training_args: dict | None) -> list[EvalResult]:
    """The headline metrics as huggingface_hub `EvalResult`s (the card's `model-index`)."""
    if eval_results is None:
        return []
    dataset = eval_results.get("dataset") or (training_args or {}).get("dataset") or "unknown"
    title, _ = _dataset_info(dataset)
    results = []
    for key, (metric_type, metric_name) in HEADLINE_METRICS[task].items():
        value = eval_results.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            continue
        results.append(EvalResult(
            task_type=PIPELINE_TAG,
            task_name=TASK_TITLES[task],
            dataset_type=str(dataset),
            dataset_name=title,
            dataset_config=(training_args or {}).get("dataset_config") or None,
            dataset_split=eval_results.get("split") or (training_args or {}).get("eval_split") or None,
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=_round(float(value)),
        ))
    return results


def template_variables(
    model_dir: str | os.PathLike, repo_id: str, *, base_model: str | None = None
) -> tuple[dict[str, Any], dict | None, dict | None, dict]:
    """The variables the template is rendered with, and the files they come from.

    Returns:
        `(variables, training_args, eval_results, config)`; the two optional files are `None` when absent.
    """
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    config = read_json_object(config_path, required=True)
    task = config.get("task")
    if task not in TASK_TITLES:
        raise ValueError(
            f"{config_path} has task={task!r}; a model card needs a fine-tuned model with task 'au' or 'expression'."
        )
    labels = _labels(config, config_path)
    training_args = read_json_object(model_dir / "training_args.json", required=False)
    eval_results = read_json_object(model_dir / "eval_results.json", required=False)

    dataset = (training_args or {}).get("dataset") or (eval_results or {}).get("dataset")
    title, info = _dataset_info(dataset)
    setting = info.setting if info else "unknown"
    license_key = "synthetic" if setting == "synthetic" else ("known" if info else "unknown")
    image_size = (config.get("vision_config") or {}).get("image_size", 224)
    variables = {
        "model_name": repo_id.split("/")[-1],
        "repo_id": repo_id,
        "task": task,
        "task_title": TASK_TITLES[task],
        "name_template": _md(config.get("name_template", "{}")),
        "labels": labels,
        "au_threshold": config.get("au_threshold", 0.5),
        "test_time_flip": bool(config.get("test_time_flip", False)),
        "image_size": image_size,
        "base_model": base_model,
        "data_setting": DATA_SETTING_TEXT[setting].format(title=title),
        "data_license_note": DATA_LICENSE_TEXT[license_key].format(title=title),
        "training": _training_section(training_args, eval_results),
        "training_missing": TRAINING_MISSING_TEXT,
        "evaluation": _evaluation_section(task, eval_results, labels, training_args),
        "evaluation_missing": EVALUATION_MISSING_TEXT,
    }
    return variables, training_args, eval_results, config


def render_model_card(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    base_model: str | None = None,
    license: str = "apache-2.0",
    extra_tags: Iterable[str] = (),
) -> ModelCard:
    """Render the model card of the trained CLEF model saved in `model_dir`, to be published as `repo_id`.

    Args:
        model_dir: a folder written by `save_pretrained` (`config.json` required; `training_args.json` and
            `eval_results.json` are used when present).
        repo_id: the Hub repository, `"user/name"`; its name is the model's name in the card.
        base_model: the Hub id of the checkpoint that was fine-tuned, if it is on the Hub.
        license: the licence identifier of the card's metadata.
        extra_tags: more Hub tags, after `facial-action-units`/`facial-expression-recognition`, `clef` and
            `affective-computing`.

    Returns:
        A `huggingface_hub.ModelCard`; `card.save(path)` writes it, `card.data` holds the metadata.
    """
    variables, training_args, eval_results, config = template_variables(model_dir, repo_id, base_model=base_model)
    task = variables["task"]
    tags = [TASK_TAGS[task], *BASE_TAGS]
    tags += [tag for tag in extra_tags if tag not in tags]
    dataset = (training_args or {}).get("dataset") or (eval_results or {}).get("dataset")
    if dataset and os.sep in str(dataset):
        dataset = os.path.basename(os.path.normpath(dataset))
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=tags,
        base_model=base_model,
        datasets=[dataset] if dataset else None,
        metrics=sorted({metric_type for metric_type, _ in HEADLINE_METRICS[task].values()}),
        model_name=variables["model_name"],
        eval_results=_eval_results(task, eval_results, training_args) or None,
    )
    return ModelCard.from_template(card_data, template_path=str(template_path()), **variables)


__all__ = ["DATASETS", "DatasetInfo", "PIPELINE_TAG", "TASK_TAGS", "render_model_card", "template_path",
           "template_variables"]

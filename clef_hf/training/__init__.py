"""CLEF's training loops on Accelerate: stage 1 pre-training on activities ([`pretrain`]) and stage 2 fine-tuning for
AUs or expressions ([`finetune`]), with their arguments. `scripts/pretrain.py` and `scripts/finetune.py` call them:

    accelerate launch scripts/pretrain.py --model_name_or_path farl-clip --dataset bp4d --dataset_config fold1 ...
    accelerate launch scripts/finetune.py --model_name_or_path outputs/pretrain/model --dataset bp4d ...
    python scripts/evaluate_model.py --model_name_or_path outputs/bp4d-fold1/best --dataset bp4d --dataset_config fold1 ...

[`classical_references`] gives the classical rows to compare with (logistic regression on pixels and on HOG), chosen
on the same validation split and scored once on the same test split.
"""

from .arguments import EvaluationArguments, FineTuningArguments, PretrainingArguments
from .evaluation import evaluate_checkpoint
from .finetune import finetune
from .pretrain import pretrain
from .references import classical_references

__all__ = [
    "EvaluationArguments",
    "FineTuningArguments",
    "PretrainingArguments",
    "classical_references",
    "evaluate_checkpoint",
    "finetune",
    "pretrain",
]

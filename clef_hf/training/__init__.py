"""CLEF's training loops on Accelerate: stage 1 pre-training on activities ([`pretrain`]) and stage 2 fine-tuning for
AUs or expressions ([`finetune`]), with their arguments. `scripts/pretrain.py` and `scripts/finetune.py` call them:

    accelerate launch scripts/pretrain.py --model_name_or_path farl-clip --dataset bp4d --dataset_config fold1 ...
    accelerate launch scripts/finetune.py --model_name_or_path outputs/pretrain/model --dataset bp4d ...
    python scripts/evaluate_model.py --model_name_or_path outputs/bp4d-fold1/best --dataset bp4d --dataset_config fold1 ...
"""

from .arguments import EvaluationArguments, FineTuningArguments, PretrainingArguments
from .evaluation import evaluate_checkpoint
from .finetune import finetune
from .pretrain import pretrain

__all__ = [
    "EvaluationArguments",
    "FineTuningArguments",
    "PretrainingArguments",
    "evaluate_checkpoint",
    "finetune",
    "pretrain",
]

"""CLEF's training loops on Accelerate: stage 1 pre-training on activities ([`pretrain`]) and stage 2 fine-tuning for
AUs or expressions ([`finetune`]), with their arguments. `scripts/pretrain.py` and `scripts/finetune.py` call them:

    accelerate launch scripts/pretrain.py --model_name_or_path farl-clip --dataset bp4d --dataset_config fold1 ...
    accelerate launch scripts/finetune.py --model_name_or_path outputs/pretrain/model --dataset bp4d ...
"""

from .arguments import FineTuningArguments, PretrainingArguments
from .finetune import finetune
from .pretrain import pretrain

__all__ = ["FineTuningArguments", "PretrainingArguments", "finetune", "pretrain"]

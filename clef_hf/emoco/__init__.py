"""EmoCo (Sun, Zeng and Shan, FG 2021): emotion-aware contrastive pre-training from expression-labelled faces.

`losses` holds the objective, one pure function per equation (Eq. 1, 2, 4, 5); `queue` holds the stateful parts, the
multi-queue dictionary of negative keys and the momentum update of the key encoder (Eq. 3).
"""

from .losses import emoco_loss, emotion_aware_contrastive_loss, emotion_classification_loss, intra_class_normalize
from .queue import MultiQueueDictionary, momentum_update

__all__ = [
    "MultiQueueDictionary",
    "emoco_loss",
    "emotion_aware_contrastive_loss",
    "emotion_classification_loss",
    "intra_class_normalize",
    "momentum_update",
]

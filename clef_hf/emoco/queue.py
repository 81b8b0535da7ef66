"""EmoCo's stateful parts (Sun, Zeng and Shan, FG 2021, Sec. III-C): the multi-queue dictionary of negative keys, one
FIFO queue per emotion, and the momentum update of the key encoder (Eq. 3).

A training step follows MoCo's order: update the momentum encoder (Eq. 3), encode the keys, compute the losses
against the dictionary as it stands, then enqueue the batch's keys. Across processes the caller gathers keys and
labels before `enqueue`, so that every replica holds the same dictionary.
"""

import torch
import torch.nn.functional as F
from torch import nn


class MultiQueueDictionary(nn.Module):
    """One FIFO queue of `queue_size` keys per emotion (Sec. III-C2), held in buffers.

    "Samples from the different emotional categories are stored in different queues. [...] The samples in current
    input mini-batch are enqueued according to their emotional category, and the same quantity of oldest samples are
    popped. The size of each queue in the dictionary is K." Each key goes to the queue of its label; when a queue is
    full the oldest key is overwritten.

    A fresh dictionary is empty. MoCo (and ANCOR's multi-queue code) start from random unit vectors instead, but
    EmoCo's negatives are "historical samples that belong to the same emotional category", encoded features from the
    preceding batches; and with K = 65536 per emotion, rare AffectNet emotions (a few thousand images) would keep
    random keys as most of their negatives for tens of epochs. So we track how many slots of each queue hold a real
    key (`filled_slots`) and `keys_and_labels` returns only those.

    The buffers (`keys`, `pointers`, `filled_slots`) are saved in the state dict and follow `.to(device)`.

    Args:
        num_classes: number of emotions C, one queue each (7 on AffectNet: six basic emotions and neutral).
        queue_size: K, keys per queue; 65536 in the paper (Sec. IV-B4). At the defaults the buffers take
            7 × 65536 × 128 × 4 bytes ≈ 235 MB in float32.
        feature_dim: dimension D of the keys, the projection head's output; 128 in the paper (Sec. III-B, IV-B3).
    """

    def __init__(self, num_classes: int = 7, queue_size: int = 65536, feature_dim: int = 128):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("queue_size", queue_size), ("feature_dim", feature_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MultiQueueDictionary: {name} must be a positive integer, got {value!r}.")
        self.num_classes = num_classes
        self.queue_size = queue_size
        self.feature_dim = feature_dim
        self.register_buffer("keys", torch.zeros(num_classes, queue_size, feature_dim))
        # The slot the next key of each emotion is written to; once a queue is full, also its oldest key.
        self.register_buffer("pointers", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("filled_slots", torch.zeros(num_classes, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, queue_size={self.queue_size}, feature_dim={self.feature_dim}"

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Write each key into the queue of its label, in batch order, overwriting the oldest keys of a full queue.

        Keys are detached and L2-normalised before they are stored. If a batch holds more than K keys of one emotion,
        only its last K remain, as if they had been enqueued one by one.

        Args:
            keys: (n, D) keys k from the momentum encoder.
            labels: (n,) emotion labels in [0, num_classes).
        """
        if keys.dim() != 2 or keys.shape[1] != self.feature_dim:
            raise ValueError(
                f"MultiQueueDictionary.enqueue: keys must have shape (n, {self.feature_dim}), got {tuple(keys.shape)}."
            )
        if labels.dim() != 1 or labels.shape[0] != keys.shape[0]:
            raise ValueError(
                f"MultiQueueDictionary.enqueue: labels must have shape ({keys.shape[0]},), one per key, got "
                f"{tuple(labels.shape)}."
            )
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"MultiQueueDictionary.enqueue: labels must be integer, got dtype {labels.dtype}.")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"MultiQueueDictionary.enqueue: labels must lie in [0, {self.num_classes}), got values from "
                f"{int(labels.min())} to {int(labels.max())}."
            )
        keys = F.normalize(keys.detach(), dim=-1).to(device=self.keys.device, dtype=self.keys.dtype)
        labels = labels.to(self.keys.device)
        capacity = self.queue_size
        for emotion in labels.unique().tolist():
            emotion_keys = keys[labels == emotion]
            count = emotion_keys.shape[0]
            start = int(self.pointers[emotion])
            if count > capacity:
                # Earlier keys of this batch would be overwritten by later ones; write only the survivors.
                start = (start + count - capacity) % capacity
                emotion_keys = emotion_keys[-capacity:]
            slots = (start + torch.arange(emotion_keys.shape[0], device=self.keys.device)) % capacity
            self.keys[emotion, slots] = emotion_keys
            self.pointers[emotion] = (int(self.pointers[emotion]) + count) % capacity
            self.filled_slots[emotion] = min(int(self.filled_slots[emotion]) + count, capacity)

    def queue_keys(self, emotion: int) -> torch.Tensor:
        """The stored keys of one emotion, oldest first, as a copy (a later `enqueue` does not change it).

        Args:
            emotion: label in [0, num_classes).

        Returns:
            (filled_slots[emotion], D) keys.
        """
        if not 0 <= emotion < self.num_classes:
            raise ValueError(
                f"MultiQueueDictionary.queue_keys: emotion must lie in [0, {self.num_classes}), got {emotion}."
            )
        filled = int(self.filled_slots[emotion])
        if filled < self.queue_size:
            return self.keys[emotion, :filled].clone()
        pointer = int(self.pointers[emotion])
        return torch.cat([self.keys[emotion, pointer:], self.keys[emotion, :pointer]])

    def keys_and_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All stored keys with the emotion of their queue: the negatives and negative labels of Eq. 5.

        Returns:
            (M, D) keys, queue by queue in label order and oldest first within a queue, and (M,) their labels, with
            M = filled_slots.sum(); never a slot that was not written.
        """
        keys = [self.queue_keys(emotion) for emotion in range(self.num_classes)]
        labels = [
            torch.full((len(emotion_keys),), emotion, dtype=torch.long, device=self.keys.device)
            for emotion, emotion_keys in enumerate(keys)
        ]
        return torch.cat(keys), torch.cat(labels)


@torch.no_grad()
def momentum_update(online: nn.Module, momentum: nn.Module, m: float = 0.999) -> None:
    """Eq. 3, the momentum update θ_k := m θ_k + (1 - m) θ_q of the key encoder, in place.

    `online` holds θ_q (E_q → h_q, trained by back-propagation), `momentum` holds θ_k (E_k → h_k, same structure).
    Every parameter of `momentum` is updated from the parameter of `online` with the same name, frozen or not.
    Buffers are left alone: the paper averages parameters, and the CLIP vision towers hold no running statistics.
    With m = 0 the momentum encoder becomes a copy of the online one (MoCo's initialisation).

    Args:
        online: the online module (query encoder and head).
        momentum: the momentum module (key encoder and head), updated in place.
        m: momentum coefficient in [0, 1); 0.999 in the paper (Sec. IV-B4).
    """
    if not 0.0 <= m < 1.0:
        raise ValueError(f"momentum_update: m must lie in [0, 1) (Eq. 3), got {m}.")
    online_parameters = dict(online.named_parameters())
    momentum_parameters = dict(momentum.named_parameters())
    missing = sorted(online_parameters.keys() - momentum_parameters.keys())
    unexpected = sorted(momentum_parameters.keys() - online_parameters.keys())
    mismatched = [
        f"{name}: online {tuple(parameter.shape)} vs momentum {tuple(momentum_parameters[name].shape)}"
        for name, parameter in online_parameters.items()
        if name in momentum_parameters and parameter.shape != momentum_parameters[name].shape
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            "momentum_update: online and momentum modules must have the same parameters (names and shapes); "
            f"only in online: {missing}; only in momentum: {unexpected}; shape mismatches: {mismatched}."
        )
    for name, momentum_parameter in momentum_parameters.items():
        # Two separate products, not add_(alpha=): the result is exactly m θ_k + (1 - m) θ_q, rounded per operation.
        momentum_parameter.mul_(m).add_(online_parameters[name].detach() * (1.0 - m))


__all__ = ["MultiQueueDictionary", "momentum_update"]

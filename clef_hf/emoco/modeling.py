"""EmoCo's networks on CLEF's CLIP encoders (Sun, Zeng and Shan, FG 2021, Sec. III and Fig. 2).

The online encoder E_q is the CLEF model's vision tower and visual projection; an MLP projection head h_q maps its
features to the 128-d queries q, and a bias-free linear classifier W over the emotions serves Eq. 2 and, through its
normalised rows, the prototypes of Eq. 4. The momentum encoder E_k → h_k is a copy updated by Eq. 3 only, and the
multi-queue dictionary stores its keys per emotion. After pre-training only the CLEF model is kept (as in MoCo, the
heads and the momentum side are training devices); the training state keeps them all, so a run resumes exactly.
"""

import copy

import torch
from torch import nn

from ..modeling_clef import CLEFModel
from .queue import MultiQueueDictionary, momentum_update


class EmoCoProjectionHead(nn.Module):
    """The MLP projection head h: Linear → ReLU → Linear, from the encoder's features to the contrastive space
    (MoCo v2's head, which EmoCo uses; Sec. III-B).

    Args:
        input_dim: size of the encoder's features (the CLEF model's `projection_dim`).
        feature_dim: size of q and k, 128 in the paper.
    """

    def __init__(self, input_dim: int, feature_dim: int = 128):
        super().__init__()
        self.dense = nn.Linear(input_dim, input_dim)
        self.activation = nn.ReLU()
        self.output = nn.Linear(input_dim, feature_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, input_dim) -> (batch, feature_dim), un-normalised."""
        return self.output(self.activation(self.dense(features)))


class EmoCoPretrainingModule(nn.Module):
    """The CLEF model with EmoCo's training parts, as one module so that data-parallel training sees one forward.

    Args:
        model: the CLEF model whose vision tower and visual projection are the online encoder E_q.
        num_classes: number of emotions C (one queue and one classifier row each).
        feature_dim: size of q and k (paper: 128).
        queue_size: keys per emotion queue, K (paper: 65536).
    """

    def __init__(self, model: CLEFModel, num_classes: int, feature_dim: int = 128, queue_size: int = 65536):
        super().__init__()
        self.model = model
        self.head = EmoCoProjectionHead(model.config.projection_dim, feature_dim)
        self.classifier = nn.Linear(feature_dim, num_classes, bias=False)
        self.momentum_encoder = copy.deepcopy(self.online_encoder())  # MoCo: E_k starts as a copy of E_q
        self.momentum_encoder.requires_grad_(False)
        self.queue = MultiQueueDictionary(num_classes, queue_size, feature_dim)

    def online_encoder(self) -> nn.ModuleDict:
        """E_q → h_q as a `ModuleDict` named like `momentum_encoder` (built on the fly, so that the CLEF model's
        parameters are registered once, under `model`)."""
        return nn.ModuleDict(
            {"vision_model": self.model.vision_model, "visual_projection": self.model.visual_projection, "head": self.head}
        )

    def forward(self, query_views: torch.Tensor, key_views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries from the online side, keys from the momentum side.

        Args:
            query_views: (batch, 3, size, size) the views x_q.
            key_views: (batch, 3, size, size) the other views x_k of the same images.

        Returns:
            (batch, feature_dim) queries q, with gradients, and (batch, feature_dim) keys k+, without.
        """
        queries = self.head(self.model.get_image_features(query_views))
        with torch.no_grad():
            encoder = self.momentum_encoder
            pooled = encoder["vision_model"](pixel_values=key_views).pooler_output
            keys = encoder["head"](encoder["visual_projection"](pooled))
        return queries, keys

    @torch.no_grad()
    def update_momentum_encoder(self, m: float = 0.999) -> None:
        """Eq. 3 after an optimizer step: θ_k := m θ_k + (1 - m) θ_q."""
        momentum_update(self.online_encoder(), self.momentum_encoder, m)


__all__ = ["EmoCoPretrainingModule", "EmoCoProjectionHead"]

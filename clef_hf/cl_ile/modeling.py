"""CL-ILE's two training stages on CLEF's CLIP encoders (Lian et al., BMVC 2023, Sec. 3 and Fig. 2).

The paper's ResNet-18 feature extractor and its two MLP encoders become two copies of the CLEF model's vision side
(vision tower and visual projection), both starting from the same weights:

- the **ID encoder** F^ID_enc, a copy made here, trained in stage I with the identity-label embeddings (ILEs), one
  (C, D) set per training subject, then frozen;
- the **general encoder** F^G_enc, the CLEF model's own vision side, trained in stage II with the shared AU
  embeddings AU^G (C, D) while its features are pushed orthogonal to the frozen ID features.

After training only the general encoder and the AU embeddings remain (the paper discards the ID encoder and ILEs): the
normalised AU embeddings become the CLEF model's `label_embeddings`, so the saved checkpoint is an ordinary CLEF model
that the `facial-behavior` pipeline loads. CL-ILE predicts an AU when σ(F^G · AU_c) > 0.5; the CLEF model predicts it
when σ(cos(F^G, AU_c) / τ) > 0.5. Both hold exactly when F^G · AU_c > 0, so the decisions are the same and only the
scores' calibration differs.
"""

import copy

import torch
from torch import nn

from ..modeling_clef import CLEFModel, CLEFOutput
from .losses import (au_bce_loss, identity_loss, label_contrastive_loss, orthogonality_loss,
                     selective_learning_weights, stage_one_loss, stage_two_loss)


class CLILEModule(nn.Module):
    """The CLEF model with CL-ILE's ID encoder, ILEs and AU embeddings, as one module for the fine-tuning loop.

    Args:
        model: the CLEF model (task "au", its label set given); its vision side is the general encoder.
        num_subjects: N, the training split's subjects, one set of ILEs each.
        identity_bce_weight: λ of Eq. 3 (paper: 0.4).
        bce_weight, orthogonality_weight, contrastive_weight: λ_1, λ_2, λ_3 of Eq. 6 (paper: 1, 0.5, 0.4).
        temperature: τ of Eq. 5 (paper: 2).
        orthogonality_floor: the floor on |cos| inside Eq. 4's log (`losses.orthogonality_loss`'s `eps`; not in the
            paper).
    """

    def __init__(
        self,
        model: CLEFModel,
        num_subjects: int,
        identity_bce_weight: float = 0.4,
        bce_weight: float = 1.0,
        orthogonality_weight: float = 0.5,
        contrastive_weight: float = 0.4,
        temperature: float = 2.0,
        orthogonality_floor: float = 1e-6,
    ):
        super().__init__()
        if num_subjects < 2:
            raise ValueError(f"CL-ILE needs at least 2 training subjects for its identity loss, got {num_subjects}.")
        self.model = model
        num_aus, dim = len(model.config.label_names), model.config.projection_dim
        self.identity_encoder = copy.deepcopy(
            nn.ModuleDict({"vision_model": model.vision_model, "visual_projection": model.visual_projection})
        )
        self.identity_label_embeddings = nn.Parameter(torch.randn(num_subjects, num_aus, dim) * dim**-0.5)
        self.au_embeddings = nn.Parameter(torch.randn(num_aus, dim) * dim**-0.5)
        for module in (model.text_model, model.text_projection):
            module.requires_grad_(False)  # CL-ILE has no text side
        self.weights = {"identity_bce": identity_bce_weight, "bce": bce_weight, "orthogonality": orthogonality_weight,
                        "contrastive": contrastive_weight}
        self.temperature = temperature
        self.orthogonality_floor = orthogonality_floor

    def identity_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, 3, size, size) images -> (batch, D) person-specific features F^ID_emb."""
        pooled = self.identity_encoder["vision_model"](pixel_values=pixel_values).pooler_output
        return self.identity_encoder["visual_projection"](pooled)

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor, subject_ids: torch.Tensor | None = None, stage: int = 2
    ) -> CLEFOutput:
        """The loss of one stage.

        Args:
            pixel_values: (batch, 3, size, size) augmented images.
            labels: (batch, C) AU labels, 1 / 0 / -1 (unknown).
            subject_ids: (batch,) subject indices in [0, N); needed in stage I.
            stage: 1 trains the ID encoder and the ILEs (Eq. 3), 2 the general encoder and the AU embeddings (Eq. 6).

        Returns:
            [`CLEFOutput`] with `loss`; in stage II also `logits` (batch, C) = F^G · AU_c and the features.
        """
        au_weights = selective_learning_weights(labels)  # (batch, C) w_c of Eq. 2
        if stage == 1:
            if subject_ids is None:
                raise ValueError("CL-ILE's stage I needs the images' subject ids (a `subject` column).")
            identity_features = self.identity_features(pixel_values).float()
            bce = au_bce_loss(identity_features, self.identity_label_embeddings, labels, au_weights, subject_ids)
            loss = stage_one_loss(bce, identity_loss(self.identity_label_embeddings), self.weights["identity_bce"])
            return CLEFOutput(loss=loss, image_embeds=identity_features)
        if stage != 2:
            raise ValueError(f"stage must be 1 or 2, got {stage}.")
        with torch.no_grad():  # the ID encoder is frozen in stage II
            identity_features = self.identity_features(pixel_values).float()
        general_features = self.model.get_image_features(pixel_values).float()
        loss = stage_two_loss(
            au_bce_loss(general_features, self.au_embeddings, labels, au_weights),
            orthogonality_loss(identity_features, general_features, self.orthogonality_floor),
            label_contrastive_loss(general_features, self.au_embeddings, labels, self.temperature),
            self.weights["bce"], self.weights["orthogonality"], self.weights["contrastive"],
        )
        au_embeddings = nn.functional.normalize(self.au_embeddings, dim=-1)
        return CLEFOutput(loss=loss, logits=general_features @ au_embeddings.T, image_embeds=general_features,
                          label_embeds=au_embeddings)

    @torch.no_grad()
    def label_embeddings(self, tokenizer=None) -> torch.Tensor:
        """(C, D) normalised AU embeddings, also stored in the model's `label_embeddings` buffer so that the model
        saved next predicts with them (`tokenizer` is unused: the interface of `FineTuningModule`)."""
        self.model.label_embeddings = nn.functional.normalize(self.au_embeddings.detach(), dim=-1).clone()
        return self.model.label_embeddings


__all__ = ["CLILEModule"]

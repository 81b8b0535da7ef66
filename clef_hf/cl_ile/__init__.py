"""CL-ILE (BMVC 2023) on CLEF's CLIP encoders: Lian et al.'s two-stage training for AU recognition, with
identity-label embeddings (ILEs) in stage I and a supervised contrastive loss between image features and AU embeddings
in stage II.

`losses.py` holds its losses, one pure function per equation (Eqs. 1-6 of the paper), with the paper's
hyperparameters as defaults; `modeling.py` the training module of both stages (`finetune --objective cl_ile`).
"""

from .losses import (EMBEDDING_DIM, au_bce_loss, identity_loss, label_contrastive_loss, orthogonality_loss,
                     selective_learning_weights, stage_one_loss, stage_two_loss)

__all__ = ["EMBEDDING_DIM", "au_bce_loss", "identity_loss", "label_contrastive_loss", "orthogonality_loss",
           "selective_learning_weights", "stage_one_loss", "stage_two_loss"]

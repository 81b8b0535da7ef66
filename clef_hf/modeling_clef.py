"""CLEF model: CLIP's image and text towers with bias-free projections, a learnable temperature, and the label-name
embeddings kept in the checkpoint, predicting facial behaviour by image-to-label-name similarity."""

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import CLIPModel, CLIPTextModel, CLIPVisionModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .configuration_clef import CLEFConfig
from .hub_access import explain_hub_failure
from .losses import (
    au_intensity_loss,
    au_loss,
    expected_intensity,
    expression_loss,
    fine_tuning_loss,
    intensity_logits,
    name_description_loss,
)
from .processing_clef import check_tokenizer_fits
from .vocabulary import fill_template, intensity_prompts


@dataclass
class CLEFOutput(ModelOutput):
    """
    Output of [`CLEFModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Returned with `labels`: the task loss (Eq. 4 or Eq. 5), or the fine-tuning loss of Eq. 6 when label
            description inputs are passed too.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Cosine similarity of each image with each label name, times the learned logit scale `1/τ`. For AUs,
            `sigmoid(logits)` is the probability that each AU is present; for expressions, `softmax(logits)`.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            L2-normalised image embeddings.
        label_embeds (`torch.FloatTensor` of shape `(num_labels, projection_dim)`):
            L2-normalised label-name embeddings used for the logits.
        description_embeds (`torch.FloatTensor` of shape `(num_labels, projection_dim)`, *optional*):
            L2-normalised label-description embeddings, when description inputs are passed.
        image_name_loss (`torch.FloatTensor` of shape `()`, *optional*):
            L_IN (Eq. 4 or Eq. 5).
        name_description_loss (`torch.FloatTensor` of shape `()`, *optional*):
            L_DN (Eq. 3).
        vision_model_output (`BaseModelOutputWithPooling`):
            The output of the [`CLIPVisionModel`].
        intensity (`torch.FloatTensor` of shape `(batch_size, num_labels)`, *optional*):
            An `au_intensity` model's predicted intensity of each AU, the expected level of Eq. I (0-5).
        intensity_loss (`torch.FloatTensor` of shape `()`, *optional*):
            L^int_IP (Eq. I), with `intensity_labels`; `loss` then includes it times `config.intensity_loss_weight`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    label_embeds: torch.FloatTensor | None = None
    description_embeds: torch.FloatTensor | None = None
    image_name_loss: torch.FloatTensor | None = None
    name_description_loss: torch.FloatTensor | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
    intensity: torch.FloatTensor | None = None
    intensity_loss: torch.FloatTensor | None = None

    def to_tuple(self) -> tuple[Any]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


class CLEFPreTrainedModel(PreTrainedModel):
    """Holds the configuration class and the initialisation of CLEF's own parameters; the CLIP towers initialise
    themselves."""

    config_class = CLEFConfig
    config: CLEFConfig
    base_model_prefix = "clef"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        factor = self.config.initializer_factor
        if isinstance(module, CLEFModel):
            init.normal_(module.visual_projection.weight, std=module.vision_embed_dim**-0.5 * factor)
            init.normal_(module.text_projection.weight, std=module.text_embed_dim**-0.5 * factor)
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            init.zeros_(module.label_embeddings)


class CLEFModel(CLEFPreTrainedModel):
    r"""
    CLEF (Zhang et al., ICCV 2023): a [`CLIPVisionModel`] and a [`CLIPTextModel`] with bias-free linear projections
    to `projection_dim` (from the image CLS token and the text end-of-text token) and a learnable logit scale `1/τ`.

    An image is classified by its cosine similarity with the embeddings of the label names filled into the name
    template ("a photo of a person with lip corner puller."). Those embeddings are kept, normalised, in the persistent
    buffer `label_embeddings` of shape `(num_labels, projection_dim)`, saved in `model.safetensors`; compute them with
    [`~CLEFModel.update_label_embeddings`].
    """

    def __init__(self, config: CLEFConfig):
        super().__init__(config)
        self.projection_dim = config.projection_dim
        self.vision_embed_dim = config.vision_config.hidden_size
        self.text_embed_dim = config.text_config.hidden_size

        self.vision_model = CLIPVisionModel._from_config(config.vision_config)
        self.text_model = CLIPTextModel._from_config(config.text_config)
        self.visual_projection = nn.Linear(self.vision_embed_dim, self.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_embed_dim, self.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.register_buffer(
            "label_embeddings", torch.zeros(len(config.label_names), self.projection_dim), persistent=True
        )
        if config.au_intensity:  # only intensity models carry it, so that older checkpoints load as they are
            self.register_buffer("intensity_embeddings", self._zero_intensity_embeddings(), persistent=True)
        self.post_init()

    # ------------------------------------------------------------------ features

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> torch.FloatTensor:
        """
        Args:
            pixel_values: (batch, num_channels, image_size, image_size) images, normalised by the processor.

        Returns:
            (batch, projection_dim) projected, un-normalised image features, as `CLIPModel.get_image_features`.
        """
        return self.visual_projection(self.vision_model(pixel_values=pixel_values, **kwargs).pooler_output)

    def get_image_embeddings(self, pixel_values: torch.Tensor, test_time_flip: bool | None = None) -> torch.Tensor:
        """The normalised image embeddings inference compares with label embeddings (the pipeline, the evaluation).

        Args:
            pixel_values: (batch, num_channels, image_size, image_size) images, normalised by the processor.
            test_time_flip: also embed each image mirrored left-right and take the normalised mean of the two unit
                embeddings; defaults to `config.test_time_flip`. The label sets are mirror-symmetric (AUs are scored
                for the whole face, and a one-sided AU stays one-sided), so the mirror image has the same labels.

        Returns:
            (batch, projection_dim) float32 unit vectors.
        """
        flip = self.config.test_time_flip if test_time_flip is None else test_time_flip
        embeds = nn.functional.normalize(self.get_image_features(pixel_values).float(), dim=-1)
        if flip:
            mirrored = nn.functional.normalize(self.get_image_features(pixel_values.flip(-1)).float(), dim=-1)
            embeds = nn.functional.normalize(embeds + mirrored, dim=-1)
        return embeds

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.FloatTensor:
        """
        Args:
            input_ids: (batch, sequence_length) token ids from a CLIP tokenizer that fits this model.
            attention_mask: (batch, sequence_length), 1 for real tokens and 0 for padding.

        Returns:
            (batch, projection_dim) projected, un-normalised text features pooled at the end-of-text token, as
            `CLIPModel.get_text_features`.
        """
        vocab_size = self.config.text_config.vocab_size
        if ((input_ids >= vocab_size) | (input_ids < 0)).any():  # else an opaque "index out of range" from torch
            raise ValueError(
                f"input_ids hold token ids from {int(input_ids.min())} to {int(input_ids.max())}, but the text "
                f"encoder has a vocabulary of {vocab_size}: the tokenizer does not fit this model."
            )
        outputs = self.text_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self.text_projection(outputs.pooler_output)

    @property
    def temperature(self) -> torch.Tensor:
        """The learnable temperature τ of Eq. 3-5, `1 / logit_scale.exp()`, bounded below by `1 / max_logit_scale`."""
        return 1.0 / self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    # ------------------------------------------------------------------ label embeddings

    def _tokenize(self, tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
        inputs = tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.config.text_config.max_position_embeddings,
            return_tensors="pt",
        )
        return {key: inputs[key].to(self.device) for key in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def encode_texts(self, tokenizer, texts: list[str], batch_size: int = 64) -> torch.FloatTensor:
        """Normalised text embeddings of `texts`, computed without gradient in eval mode.

        Args:
            tokenizer: a CLIP tokenizer (or a [`CLEFProcessor`]) that fits this model.
            texts: the prompts to embed.
            batch_size: texts per text-encoder call.

        Returns:
            (len(texts), projection_dim) L2-normalised embeddings.
        """
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a CLEFProcessor or a tokenizer
        check_tokenizer_fits(tokenizer, self.config.text_config)
        was_training = self.training
        self.eval()
        try:
            chunks = [
                self.get_text_features(**self._tokenize(tokenizer, list(texts[start : start + batch_size])))
                for start in range(0, len(texts), batch_size)
            ]
        finally:
            self.train(was_training)
        if not chunks:
            return torch.zeros(0, self.projection_dim, device=self.device)
        return nn.functional.normalize(torch.cat(chunks), dim=-1)

    def update_label_embeddings(self, tokenizer) -> torch.FloatTensor:
        """Recompute the `label_embeddings` buffer from the config's label names and name template (or, with
        `config.label_text == "descriptions"`, from its label descriptions and first description template).

        Call it after training, or after changing `config.label_names`. The buffer is resized to the label count.

        Args:
            tokenizer: a CLIP tokenizer (or a [`CLEFProcessor`]) that fits this model.

        Returns:
            (num_labels, projection_dim) the new, L2-normalised label embeddings.
        """
        if not self.config.label_names:
            raise ValueError("config.label_names is empty: there are no label names to embed.")
        if self.config.label_text == "descriptions":  # Table 6's ID: images meet the label descriptions
            prompts = fill_template(self.config.description_templates[0], self.config.label_descriptions)
        else:
            prompts = fill_template(self.config.name_template, self.config.label_names)
        embeddings = self.encode_texts(tokenizer, prompts)
        self.label_embeddings = embeddings.to(self.label_embeddings.dtype)
        if self.config.au_intensity:
            self.update_intensity_embeddings(tokenizer)
        return self.label_embeddings

    # ------------------------------------------------------------------ intensity

    def _zero_intensity_embeddings(self) -> torch.Tensor:
        shape = (len(self.config.label_names), len(self.config.intensity_levels), self.projection_dim)
        dtype = self.label_embeddings.dtype if hasattr(self, "label_embeddings") else torch.float32
        device = self.label_embeddings.device if hasattr(self, "label_embeddings") else None
        return torch.zeros(shape, dtype=dtype, device=device)

    def intensity_prompts(self) -> list[str]:
        """The C * L prompts of the AUs' intensity phrases, AU-major (`vocabulary.intensity_prompts`)."""
        return intensity_prompts(self.config.label_names, self.config.name_template, self.config.intensity_phrases)

    def update_intensity_embeddings(self, tokenizer) -> torch.FloatTensor:
        """Recompute the `intensity_embeddings` buffer, (num_labels, num_levels, projection_dim), from the label names
        in the config's intensity phrases (an `au_intensity` model only); [`update_label_embeddings`] calls it."""
        if not self.config.au_intensity:
            raise ValueError("config.au_intensity is False: this model does not score AU intensity.")
        embeddings = self.encode_texts(tokenizer, self.intensity_prompts())
        self.intensity_embeddings = embeddings.reshape(self._zero_intensity_embeddings().shape).to(
            self.label_embeddings.dtype)
        return self.intensity_embeddings

    def _stored_intensity_embeddings(self) -> torch.Tensor:
        if not self.config.au_intensity:
            raise ValueError("config.au_intensity is False: this model does not score AU intensity.")
        embeddings = self.intensity_embeddings
        expected = self._zero_intensity_embeddings().shape
        if embeddings.shape != expected:
            raise ValueError(
                f"intensity_embeddings has shape {tuple(embeddings.shape)}, but the config's labels and intensity "
                f"levels need {tuple(expected)}; call model.update_label_embeddings(tokenizer)."
            )
        if (embeddings.norm(dim=-1) == 0).any():
            raise ValueError(
                "intensity_embeddings have not been computed (some rows are zero); call "
                "model.update_label_embeddings(tokenizer)."
            )
        return embeddings

    def predict_intensity(
        self, image_embeds: torch.Tensor, intensity_embeds: torch.Tensor | None = None
    ) -> torch.FloatTensor:
        """The expected intensity level of each AU (Eq. I): `Σ_l softmax_l(z^I · z^P_cl / τ) v_l`.

        Args:
            image_embeds: (batch, projection_dim) image embeddings (normalised or not).
            intensity_embeds: (num_labels, num_levels, projection_dim) phrase embeddings; defaults to the
                `intensity_embeddings` buffer.

        Returns:
            (batch, num_labels) intensities in `[intensity_levels[0], intensity_levels[-1]]` (0-5 by default).
        """
        if intensity_embeds is None:
            intensity_embeds = self._stored_intensity_embeddings()
        levels = torch.tensor(self.config.intensity_levels, device=image_embeds.device)
        logits = intensity_logits(image_embeds.float(), intensity_embeds.float(), self.temperature.float())
        return expected_intensity(logits, levels)

    def set_labels(
        self,
        task: str | None,
        label_names: list[str],
        label_descriptions: list[str] | None = None,
        label_ids: list[str] | None = None,
        class_weights: list[float] | None = None,
        au_intensity: bool = False,
    ) -> None:
        """Give the model a new label set (e.g. a pre-trained model about to be fine-tuned for AUs).

        The config's task, labels, class weights and `au_intensity` are replaced (and validated); the
        `label_embeddings` buffer is resized to `(len(label_names), projection_dim)` (and, with `au_intensity`, the
        `intensity_embeddings` buffer to `(len(label_names), num_levels, projection_dim)`) and zeroed until
        [`~CLEFModel.update_label_embeddings`] runs.
        """
        config = self.config
        previous = {key: getattr(config, key) for key in
                    ("task", "label_names", "label_descriptions", "label_ids", "class_weights", "au_intensity")}
        config.task = task
        config.label_names = list(label_names)
        config.label_descriptions = list(label_descriptions or [])
        config.label_ids = list(label_ids or label_names)
        config.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        config.au_intensity = bool(au_intensity)
        try:
            config._check_values()
        except ValueError:
            for key, value in previous.items():
                setattr(config, key, value)
            raise
        config.id2label = dict(enumerate(config.label_ids))
        config.label2id = {label: index for index, label in enumerate(config.label_ids)}
        self.label_embeddings = torch.zeros(
            len(config.label_names), self.projection_dim, dtype=self.label_embeddings.dtype, device=self.device
        )
        if config.au_intensity:
            self.register_buffer("intensity_embeddings", self._zero_intensity_embeddings(), persistent=True)
        elif "intensity_embeddings" in self._buffers:
            del self._buffers["intensity_embeddings"]

    def _stored_label_embeddings(self) -> torch.Tensor:
        embeddings = self.label_embeddings
        if embeddings.shape[0] != len(self.config.label_names):
            raise ValueError(
                f"label_embeddings holds {embeddings.shape[0]} rows but config.label_names has "
                f"{len(self.config.label_names)}; call model.update_label_embeddings(tokenizer)."
            )
        if embeddings.shape[0] == 0:
            raise ValueError("This model has no label names (config.task is None): there is nothing to predict.")
        if (embeddings.norm(dim=-1) == 0).any():
            raise ValueError(
                "label_embeddings have not been computed (some rows are zero); call "
                "model.update_label_embeddings(tokenizer) or pass name_input_ids."
            )
        return embeddings

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        labels: torch.Tensor | None = None,
        name_input_ids: torch.LongTensor | None = None,
        name_attention_mask: torch.Tensor | None = None,
        description_input_ids: torch.LongTensor | None = None,
        description_attention_mask: torch.Tensor | None = None,
        class_weights: torch.Tensor | None = None,
        intensity_input_ids: torch.LongTensor | None = None,
        intensity_attention_mask: torch.Tensor | None = None,
        intensity_labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CLEFOutput | tuple:
        r"""
        Args:
            pixel_values: (batch, num_channels, image_size, image_size) images.
            labels: for `task="au"`, (batch, num_labels) with 1 present, 0 absent, -1 unknown (ignored); for
                `task="expression"`, (batch,) class indices. When given, the output has a loss.
            name_input_ids, name_attention_mask: (num_labels, sequence_length) tokens of the label-name prompts, in
                the order of `config.label_names`. When given, the label embeddings are computed through the text
                encoder (with gradient) instead of read from the `label_embeddings` buffer.
            description_input_ids, description_attention_mask: (num_labels, sequence_length) tokens of the label
                descriptions, aligned with the names. When given with `labels` and the name inputs, the loss is the
                fine-tuning loss of Eq. 6, `(λ L_IN + L_DN) / 2`.
            class_weights: (num_labels,) the weights w_c of Eq. 4-5; defaults to `config.class_weights`, else ones.
            intensity_input_ids, intensity_attention_mask: (num_labels * num_levels, sequence_length) tokens of the
                intensity prompts (`model.intensity_prompts()`, AU-major), an `au_intensity` model only. When given,
                the phrase embeddings are computed through the text encoder (with gradient) instead of read from the
                `intensity_embeddings` buffer.
            intensity_labels: (batch, num_labels) intensities 0-5, -1 unknown. With `labels`, the loss adds
                `config.intensity_loss_weight` times Eq. I.

        Returns:
            [`CLEFOutput`] with `logits` of shape (batch, num_labels), and for an `au_intensity` model `intensity`
            of shape (batch, num_labels).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        vision_outputs = self.vision_model(pixel_values=pixel_values, **kwargs)
        image_features = self.visual_projection(vision_outputs.pooler_output)
        image_embeds = nn.functional.normalize(image_features, dim=-1)

        if name_input_ids is not None:
            if name_input_ids.shape[0] != len(self.config.label_names):
                raise ValueError(
                    f"name_input_ids has {name_input_ids.shape[0]} rows for {len(self.config.label_names)} labels."
                )
            label_embeds = nn.functional.normalize(
                self.get_text_features(input_ids=name_input_ids, attention_mask=name_attention_mask), dim=-1
            )
        else:
            label_embeds = self._stored_label_embeddings().to(image_embeds.dtype)

        temperature = self.temperature
        logits = image_embeds @ label_embeds.T / temperature

        description_embeds = None
        image_name_loss = None
        name_description = None
        loss = None
        if description_input_ids is not None:
            if name_input_ids is None:
                raise ValueError("description_input_ids need name_input_ids: Eq. 3 aligns descriptions with names.")
            description_embeds = nn.functional.normalize(
                self.get_text_features(input_ids=description_input_ids, attention_mask=description_attention_mask),
                dim=-1,
            )
            name_description = name_description_loss(description_embeds, label_embeds, temperature)

        if labels is not None:
            if class_weights is None and self.config.class_weights is not None:
                class_weights = torch.tensor(self.config.class_weights)
            image_name_loss = self._task_loss(image_embeds, label_embeds, labels, temperature, class_weights)
            loss = image_name_loss
            if name_description is not None:
                loss = fine_tuning_loss(image_name_loss, name_description, self.config.image_name_loss_weight)

        intensity = intensity_loss = None
        if intensity_input_ids is not None or intensity_labels is not None or (
            self.config.au_intensity and name_input_ids is None
        ):
            intensity_embeds = self._intensity_embeds(intensity_input_ids, intensity_attention_mask)
            levels = torch.tensor(self.config.intensity_levels, device=image_embeds.device)
            intensity = expected_intensity(intensity_logits(image_embeds, intensity_embeds, temperature), levels)
            if intensity_labels is not None:
                intensity_loss = au_intensity_loss(
                    image_embeds, intensity_embeds, intensity_labels.to(image_embeds), levels, temperature
                )
                if loss is not None:
                    loss = loss + self.config.intensity_loss_weight * intensity_loss

        output = CLEFOutput(
            loss=loss,
            logits=logits,
            image_embeds=image_embeds,
            label_embeds=label_embeds,
            description_embeds=description_embeds,
            image_name_loss=image_name_loss,
            name_description_loss=name_description,
            vision_model_output=vision_outputs,
            intensity=intensity,
            intensity_loss=intensity_loss,
        )
        return output if return_dict else output.to_tuple()

    def _intensity_embeds(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(num_labels, num_levels, projection_dim) normalised phrase embeddings: through the text encoder from
        `input_ids`, else the `intensity_embeddings` buffer."""
        if not self.config.au_intensity:
            raise ValueError("Intensity inputs were passed but config.au_intensity is False: this model does not score "
                             "AU intensity (fine-tune it with --au_intensity).")
        shape = self._zero_intensity_embeddings().shape
        if input_ids is None:
            return self._stored_intensity_embeddings()
        if input_ids.shape[0] != shape[0] * shape[1]:
            raise ValueError(
                f"intensity_input_ids has {input_ids.shape[0]} rows for {shape[0]} labels x {shape[1]} intensity "
                f"levels = {shape[0] * shape[1]} prompts."
            )
        features = self.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return nn.functional.normalize(features, dim=-1).reshape(shape)

    def _task_loss(self, image_embeds, label_embeds, labels, temperature, class_weights) -> torch.Tensor:
        if self.config.task == "au":
            return au_loss(image_embeds, label_embeds, labels.to(image_embeds.device), temperature, class_weights)
        if self.config.task == "expression":
            return expression_loss(
                image_embeds, label_embeds, labels.to(image_embeds.device).long(), temperature, class_weights
            )
        raise ValueError(f"labels were passed but config.task is {self.config.task!r}; set it to 'au' or 'expression'.")

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs) -> "CLEFModel":
        """`PreTrainedModel.from_pretrained`, which first checks that a requested `projection_dim` (a keyword or the
        `config` passed) matches the checkpoint's, and names both if not.

        A checkpoint that does not match its own config is refused with a `ValueError` naming what is wrong: weights
        of the wrong shape, weights missing (transformers would initialise them at random and only log it; pass
        `ignore_mismatched_sizes=True` to accept both), or a weights file that cannot be read (truncated, corrupt).
        """
        config = kwargs.get("config")
        requested = config.projection_dim if isinstance(config, CLEFConfig) else kwargs.get("projection_dim")
        if requested is not None and not kwargs.get("ignore_mismatched_sizes", False):
            hub_kwargs = {
                key: kwargs[key]
                for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
                if key in kwargs
            }
            try:
                saved, _ = CLEFConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
            except OSError as error:
                raise explain_hub_failure(pretrained_model_name_or_path, error) from error
            if saved.get("projection_dim", requested) != requested:
                raise ValueError(
                    f"projection_dim={requested} does not match the weights in {pretrained_model_name_or_path!r}, "
                    f"whose projections are {saved['projection_dim']} wide (config.json: projection_dim). Leave "
                    "projection_dim unset, or pass ignore_mismatched_sizes=True to re-initialise the projections."
                )
        strict = not kwargs.get("ignore_mismatched_sizes", False)
        wants_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except OSError as error:
            raise explain_hub_failure(pretrained_model_name_or_path, error) from error
        except SafetensorError as error:  # its message names no file
            raise ValueError(
                f"The weights of {os.fspath(pretrained_model_name_or_path)!r} (model.safetensors) cannot be read: "
                f"{error}. The file is truncated or corrupt; download or save it again."
            ) from error
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            # transformers logs the mismatched tensors and raises a message that names none: load again, accepting
            # the mismatch, only to name them.
            _, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True,
                **{**kwargs, "ignore_mismatched_sizes": True},
            )
            mismatched = "; ".join(
                f"{key}: {tuple(saved)} in the checkpoint, {tuple(expected)} for its config"
                for key, saved, expected in sorted(info["mismatched_keys"])
            )
            raise ValueError(
                f"The weights in {os.fspath(pretrained_model_name_or_path)!r} do not match the architecture of its "
                f"config: {mismatched}. The config.json and model.safetensors do not belong together (or a label set "
                "changed without update_label_embeddings); pass ignore_mismatched_sizes=True to re-initialise them."
            ) from error
        if strict and info["missing_keys"]:
            raise ValueError(
                f"The weights in {os.fspath(pretrained_model_name_or_path)!r} lack tensors that its config needs: "
                f"{sorted(info['missing_keys'])}. The checkpoint is incomplete or was saved for another "
                "architecture; pass ignore_mismatched_sizes=True to initialise them at random."
            )
        return (model, info) if wants_info else model

    # ------------------------------------------------------------------ construction from CLIP

    @classmethod
    def from_clip(
        cls, model_or_path: CLIPModel | str, tokenizer=None, **config_kwargs
    ) -> "CLEFModel":
        """Build a CLEF model whose towers, projections and logit scale are those of a `transformers.CLIPModel`.

        The image and text features of the result equal the CLIP model's. The learnable temperature starts at the
        CLIP model's (`config.temperature_init` records it) unless `temperature_init` is passed.

        Args:
            model_or_path: a `CLIPModel`, or a directory or Hub id that `CLIPModel.from_pretrained` loads.
            tokenizer: optional CLIP tokenizer; with label names in `config_kwargs`, the label embeddings are computed.
            config_kwargs: [`CLEFConfig`] arguments, e.g. `task="au", **au_labels()`.

        Returns:
            A [`CLEFModel`] in the CLIP model's dtype.
        """
        clip = model_or_path if isinstance(model_or_path, CLIPModel) else CLIPModel.from_pretrained(model_or_path)
        clip_config = clip.config
        if config_kwargs.get("projection_dim", clip_config.projection_dim) != clip_config.projection_dim:
            raise ValueError(
                f"projection_dim={config_kwargs['projection_dim']} does not match the CLIP model's projection "
                f"({clip_config.projection_dim}); leave it unset to take the CLIP model's."
            )
        for key in ("vision_config", "text_config"):
            if key in config_kwargs:
                raise ValueError(f"from_clip takes {key} from the CLIP model; do not pass it.")
        keep_logit_scale = "temperature_init" not in config_kwargs
        if keep_logit_scale:
            config_kwargs["temperature_init"] = math.exp(-float(clip.logit_scale.detach()))
        config = CLEFConfig(
            vision_config=clip_config.vision_config.to_dict(),
            text_config=clip_config.text_config.to_dict(),
            projection_dim=clip_config.projection_dim,
            **config_kwargs,
        )
        model = cls(config).to(dtype=clip.dtype)
        state = clip.state_dict()
        if not keep_logit_scale:
            state.pop("logit_scale")
        missing, unexpected = model.load_state_dict(state, strict=False)
        expected_missing = {"label_embeddings"} | ({"logit_scale"} if not keep_logit_scale else set()) | (
            {"intensity_embeddings"} if config.au_intensity else set())
        if set(missing) != expected_missing or unexpected:
            raise ValueError(
                f"The CLIP model's weights do not map onto CLEF: missing {sorted(set(missing) - expected_missing)}, "
                f"unexpected {sorted(unexpected)}."
            )
        if tokenizer is not None and config.label_names:
            model.update_label_embeddings(tokenizer)
        return model


__all__ = ["CLEFModel", "CLEFOutput", "CLEFPreTrainedModel"]

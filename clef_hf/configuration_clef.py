"""CLEF model configuration: the CLIP vision and text towers, the projection, the temperatures, the label set and its
prompts, and the paper's loss hyperparameters."""

import math
import sys
from dataclasses import field

from huggingface_hub.dataclasses import strict
from transformers import CLIPTextConfig, CLIPVisionConfig, PretrainedConfig

from .vocabulary import ACTIVITY_TEMPLATES, DESCRIPTION_TEMPLATES, INTENSITY_LEVELS, INTENSITY_PHRASES, NAME_TEMPLATE

TASKS = ("au", "expression")
#: What `CLEFConfig.label_text` may name: the texts embedded as the labels.
LABEL_TEXTS = ("names", "descriptions")

#: The paper's image encoder: ViT-B/16 at 224 px (FaRL's architecture). CLIP's own default patch size is 32.
DEFAULT_VISION_CONFIG = {"image_size": 224, "patch_size": 16}


@strict
class CLEFConfig(PretrainedConfig):
    r"""
    Configuration of a [`CLEFModel`]: a CLIP image encoder and a CLIP text encoder whose projected features are compared
    by cosine similarity (Zhang et al., "Weakly-Supervised Text-Driven Contrastive Learning for Facial Behavior
    Understanding", ICCV 2023).

    The defaults are the paper's: a ViT-B/16 image encoder at 224 px, a 12-layer, 512-wide, 8-head text encoder and
    512-dimensional projections.

    Args:
        vision_config (`dict` or `CLIPVisionConfig`, *optional*):
            The image encoder. Missing keys take CLIP's defaults, except `patch_size` (16) and `image_size` (224).
        text_config (`dict` or `CLIPTextConfig`, *optional*):
            The text encoder. Its `eos_token_id` is the token whose hidden state is pooled; it must match the tokenizer.
        projection_dim (`int`, *optional*, defaults to 512):
            Width of the shared image-text embedding space (the bias-free projections' output).
        pretraining_temperature (`float`, *optional*, defaults to 0.25):
            The fixed temperature ε of the pre-training contrastive losses (Eq. 1-2).
        temperature_init (`float`, *optional*, defaults to 0.07):
            Initial value of the learnable temperature τ of the fine-tuning losses (Eq. 3-5). The model stores it as
            CLIP does, as `logit_scale = log(1 / τ)`.
        max_logit_scale (`float`, *optional*, defaults to 100.0):
            Upper bound on `1 / τ`, as in CLIP's training code, so that the learnable temperature cannot collapse.
        task (`str`, *optional*):
            `"au"` (multi-label action unit detection, Eq. 5), `"expression"` (multi-class expression recognition,
            Eq. 4) or `None` (a pre-trained model without a label set).
        label_ids (`list[str]`, *optional*):
            Short label identifiers, e.g. `["AU1", "AU2"]` or `["neutral", "happiness"]`. Defaults to `label_names`.
        label_names (`list[str]`, *optional*):
            The label names compared with images, e.g. `"inner brow raiser"`, filled into `name_template`.
        label_descriptions (`list[str]`, *optional*):
            One description per label name, aligned with the names by the loss of Eq. 3.
        name_template (`str`, *optional*, defaults to `"a photo of a person with {}."`):
            The paper's single label-name prompt.
        description_templates (`list[str]`, *optional*):
            Prompts for label descriptions; one is drawn per mini-batch.
        label_text (`str`, *optional*, defaults to `"names"`):
            Which texts [`~CLEFModel.update_label_embeddings`] embeds as the labels: `"names"` (the label names in
            `name_template`, CLEF) or `"descriptions"` (the label descriptions in the first description template: a
            model fine-tuned with Table 6's `ID` components, descriptions without names).
        activity_templates (`list[str]`, *optional*):
            Prompts for activity descriptions in pre-training; one is drawn per mini-batch.
        image_name_loss_weight (`float`, *optional*, defaults to 2.0):
            λ of Eq. 6, the weight of the image-name loss against the name-description loss.
        au_threshold (`float`, *optional*, defaults to 0.5):
            An AU is predicted present when `sigmoid(logit)` exceeds this probability.
        test_time_flip (`bool`, *optional*, defaults to `False`):
            At inference ([`CLEFModel.get_image_embeddings`]: the pipeline and the evaluation), an image's embedding
            is the normalised mean of its own and its mirror image's. Fine-tuning with `--select_test_time_flip`
            sets it when it scores higher on the validation split. Training never mirrors this way.
        class_weights (`list[float]`, *optional*):
            The per-label weights `w_c` of Eq. 4-5. `None` means all ones. Training computes them from its split.
        au_intensity (`bool`, *optional*, defaults to `False`):
            An AU model that also scores intensity: each AU name is put into each of `intensity_phrases` ("slight
            lip corner puller"), and the softmax over these phrases' similarities gives the expected level
            (`losses.au_intensity_loss`). The model then keeps the phrases' embeddings in its
            `intensity_embeddings` buffer. Needs `task="au"` and `label_text="names"`.
        intensity_levels (`list[float]`, *optional*, defaults to `[0, 1, 2, 3, 4, 5]`):
            The intensity value of each level, increasing (0 absent, 1-5 FACS A-E or DISFA's scale).
        intensity_phrases (`list[str]`, *optional*):
            One phrase per level with a `{}` slot for the AU name ("no {}", "a trace of {}", "slight {}", ...),
            filled into `name_template`.
        intensity_loss_weight (`float`, *optional*, defaults to 1.0):
            The weight of the intensity loss (Eq. I) added to the fine-tuning loss of an `au_intensity` model.

    Example:

    ```python
    >>> from clef_hf import CLEFConfig, CLEFModel
    >>> from clef_hf.vocabulary import au_labels
    >>> config = CLEFConfig(task="au", **au_labels([1, 2, 4, 6, 12]))
    >>> model = CLEFModel(config)
    ```"""

    model_type = "clef"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig, "text_config": CLIPTextConfig}

    vision_config: dict | CLIPVisionConfig | None = None
    text_config: dict | CLIPTextConfig | None = None
    projection_dim: int = 512
    pretraining_temperature: float = 0.25
    temperature_init: float = 0.07
    max_logit_scale: float = 100.0
    task: str | None = None
    label_ids: list[str] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)
    label_descriptions: list[str] = field(default_factory=list)
    name_template: str = NAME_TEMPLATE
    description_templates: list[str] = field(default_factory=lambda: list(DESCRIPTION_TEMPLATES))
    label_text: str = "names"
    activity_templates: list[str] = field(default_factory=lambda: list(ACTIVITY_TEMPLATES))
    image_name_loss_weight: float = 2.0
    au_threshold: float = 0.5
    test_time_flip: bool = False
    class_weights: list[float] | None = None
    au_intensity: bool = False
    intensity_levels: list[float] = field(default_factory=lambda: list(INTENSITY_LEVELS))
    intensity_phrases: list[str] = field(default_factory=lambda: list(INTENSITY_PHRASES))
    intensity_loss_weight: float = 1.0
    initializer_factor: float = 1.0

    def __post_init__(self, **kwargs):
        if self.vision_config is None:
            self.vision_config = dict(DEFAULT_VISION_CONFIG)
        elif isinstance(self.vision_config, dict):
            self.vision_config = {**DEFAULT_VISION_CONFIG, **self.vision_config}
        if self.label_names and not self.label_ids:
            self.label_ids = list(self.label_names)
        super().__post_init__(**kwargs)
        self._check_values()
        self._drop_custom_pipelines_registered_here()
        if self.label_ids:
            self.id2label = dict(enumerate(self.label_ids))
            self.label2id = {label: index for index, label in enumerate(self.label_ids)}

    def _check_values(self) -> None:
        """Raise a `ValueError` that names the offending field for any inconsistent setting."""
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"CLEFConfig.task must be one of {TASKS} or None, got {self.task!r}.")
        if self.task is not None and not self.label_names:
            raise ValueError(f"CLEFConfig(task={self.task!r}) needs `label_names` (and `label_descriptions`).")
        num_labels = len(self.label_names)
        for name in ("label_ids", "label_descriptions"):
            values = getattr(self, name)
            if values and len(values) != num_labels:
                raise ValueError(
                    f"CLEFConfig.{name} has {len(values)} entries but label_names has {num_labels}; "
                    "they must be aligned one to one."
                )
        if len(set(self.label_ids)) != len(self.label_ids):
            duplicates = sorted({x for x in self.label_ids if self.label_ids.count(x) > 1})
            raise ValueError(f"CLEFConfig.label_ids must be unique, got duplicates {duplicates}.")
        if self.class_weights is not None:
            if len(self.class_weights) != num_labels:
                raise ValueError(
                    f"CLEFConfig.class_weights has {len(self.class_weights)} entries for {num_labels} labels."
                )
            if any(not math.isfinite(w) or w < 0 for w in self.class_weights):
                raise ValueError(f"CLEFConfig.class_weights must be finite and >= 0, got {self.class_weights}.")
        if self.label_text not in LABEL_TEXTS:
            raise ValueError(f"CLEFConfig.label_text must be one of {LABEL_TEXTS}, got {self.label_text!r}.")
        if self.label_text == "descriptions" and self.label_names and not self.label_descriptions:
            raise ValueError("CLEFConfig(label_text='descriptions') needs `label_descriptions`.")
        for name in ("name_template",):
            if getattr(self, name).count("{}") != 1:
                raise ValueError(f"CLEFConfig.{name} needs exactly one '{{}}' slot, got {getattr(self, name)!r}.")
        for name in ("description_templates", "activity_templates"):
            templates = getattr(self, name)
            if not templates:
                raise ValueError(f"CLEFConfig.{name} must hold at least one template.")
            bad = [t for t in templates if t.count("{}") != 1]
            if bad:
                raise ValueError(f"Each of CLEFConfig.{name} needs exactly one '{{}}' slot; these do not: {bad}.")
        for name in ("projection_dim",):
            if getattr(self, name) <= 0:
                raise ValueError(f"CLEFConfig.{name} must be positive, got {getattr(self, name)}.")
        for name in ("pretraining_temperature", "temperature_init"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"CLEFConfig.{name} is a temperature and must be > 0, got {value}.")
        if not 1.0 / self.temperature_init <= self.max_logit_scale:
            raise ValueError(
                f"CLEFConfig.temperature_init={self.temperature_init} gives a logit scale above "
                f"max_logit_scale={self.max_logit_scale}."
            )
        if not 0.0 < self.au_threshold < 1.0:
            raise ValueError(f"CLEFConfig.au_threshold is a probability in (0, 1), got {self.au_threshold}.")
        if self.image_name_loss_weight < 0:
            raise ValueError(f"CLEFConfig.image_name_loss_weight (λ) must be >= 0, got {self.image_name_loss_weight}.")
        self._check_intensity()

    def _check_intensity(self) -> None:
        levels, phrases = self.intensity_levels, self.intensity_phrases
        if len(levels) != len(phrases) or len(levels) < 2:
            raise ValueError(
                f"CLEFConfig.intensity_levels ({len(levels)}) and intensity_phrases ({len(phrases)}) must be aligned "
                "one to one, with at least 2 levels."
            )
        if any(not math.isfinite(v) for v in levels) or any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(f"CLEFConfig.intensity_levels must be finite and increasing, got {levels}.")
        bad = [phrase for phrase in phrases if phrase.count("{}") != 1]
        if bad:
            raise ValueError(f"Each of CLEFConfig.intensity_phrases needs exactly one '{{}}' slot; these do not: {bad}.")
        if not (math.isfinite(self.intensity_loss_weight) and self.intensity_loss_weight >= 0):
            raise ValueError(f"CLEFConfig.intensity_loss_weight must be >= 0, got {self.intensity_loss_weight}.")
        if self.au_intensity and self.task != "au":
            raise ValueError(f"CLEFConfig(au_intensity=True) scores AU intensity and needs task='au', got {self.task!r}.")
        if self.au_intensity and self.label_text != "names":
            raise ValueError("CLEFConfig(au_intensity=True) puts the label names into intensity phrases and needs "
                             f"label_text='names', got {self.label_text!r}.")

    def _drop_custom_pipelines_registered_here(self) -> None:
        """Forget the `custom_pipelines` entries (pipeline code shipped in a checkpoint for remote-code users, see
        `clef_hf.pipeline_facial_behavior.add_remote_pipeline`) of tasks that the installed clef_hf package has
        registered with transformers. transformers lets a checkpoint's `custom_pipelines` override a registered task
        and then demands `trust_remote_code=True`; with the package imported, its own pipeline serves the task
        without it."""
        custom = getattr(self, "custom_pipelines", None)
        pipelines = sys.modules.get("transformers.pipelines")  # imported by clef_hf, which registers the task
        if not custom or pipelines is None:
            return
        registered = pipelines.PIPELINE_REGISTRY.supported_tasks
        kept = {
            task: spec
            for task, spec in custom.items()
            if not (task in registered and registered[task]["impl"].__module__.startswith("clef_hf."))
        }
        if kept:
            self.custom_pipelines = kept
        else:
            del self.custom_pipelines

    @property
    def logit_scale_init_value(self) -> float:
        """`log(1 / temperature_init)`: the initial value of the model's `logit_scale` parameter."""
        return math.log(1.0 / self.temperature_init)


__all__ = ["CLEFConfig"]

"""The arguments of CLEF's two training loops, as dataclasses that `transformers.HfArgumentParser` turns into
command-line options. Defaults are the paper's (Sec. 4.1) where it gives them; every one can be overridden.

- [`PretrainingArguments`]: stage 1, the weakly-supervised activity pre-training (Eq. 1-2), and stage 0, image-text
  pre-training on captioned faces (`--pretraining_losses image_text`).
- [`FineTuningArguments`]: stage 2, AU or expression fine-tuning (Eq. 3-6) and the ablations of Table 6.
"""

import json
import os
from dataclasses import asdict, dataclass, field

from .augmentation import AugmentationConfig

#: Fine-tuning learning rates of the paper (Sec. 4.1), by data set; others default to 2e-4.
PAPER_FINE_TUNING_LEARNING_RATES = {
    "bp4d": 2e-4,
    "bp4d_plus": 2e-4,
    "affectnet": 2e-4,
    "raf_db": 2e-4,
    "disfa": 1e-4,
    "ferplus": 1e-4,
}
DEFAULT_FINE_TUNING_LEARNING_RATE = 2e-4

#: Table 6's fine-tuning components: image encoder with a linear head (I), plus label names (N), plus descriptions (D);
#: and the poster's ID: descriptions without names (images meet the description embeddings, no Eq. 3).
COMPONENTS = ("I", "IN", "IND", "ID")
#: Pre-training objectives: Table 6's image views only (PI, L_IĨ) and image views with activity texts (PA, Eq. 2);
#: SimCLR-style instance discrimination; EmoCo (Sun et al., FG 2021) on expression labels; stage 0, CLIP's / FaRL's
#: image-text loss on captioned faces.
PRETRAINING_LOSSES = ("image", "image_activity", "self_supervised", "emoco", "image_text")
#: Fine-tuning objectives: CLEF's stage 2 (Eq. 3-6 of the CLEF paper) or CL-ILE's two stages (Lian et al., BMVC 2023).
OBJECTIVES = ("clef", "cl_ile")


@dataclass
class DataArguments:
    """Which data set to read, and how to prepare it."""

    dataset: str = field(
        default="synthfaces",
        metadata={"help": "A builder name of dataset_builders (synthfaces, bp4d, bp4d_plus, disfa, raf_db, affectnet, "
                          "ferplus), a folder written by `DatasetDict.save_to_disk`, or an image folder with a "
                          "metadata.jsonl (Hugging Face's imagefolder layout: `file_name` and e.g. `caption` fields)."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The builder configuration, e.g. fold1."})
    data_dir: str | None = field(default=None, metadata={"help": "Your copy of the data set (builders that need one)."})
    dataset_options: str | None = field(
        default=None, metadata={"help": 'Builder options as JSON, e.g. \'{"num_subjects": 8}\'.'}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where `datasets` prepares the data."})
    num_proc: int = field(default=1, metadata={"help": "Processes for preparing the data."})
    dataloader_num_workers: int = 0
    cache_pixel_values: bool = field(
        default=False,
        metadata={"help": "Run the image processor over each split once, before training, and keep its output (a "
                          "float32 `pixel_values` column, cached on disk by `datasets` beside the data) instead of "
                          "decoding and processing every image again in every epoch. The same pixels, so the same "
                          "training; it pays where the images are small and read many times (the synthetic faces: "
                          "48 KB per 64-pixel face, benchmarks/pixel_cache.py). At 224 pixels it costs 600 KB per "
                          "image of disk, so it is off by default."},
    )

    def __post_init__(self) -> None:
        if self.dataset_options is not None:
            self.builder_options  # validates the JSON

    @property
    def builder_options(self) -> dict:
        if not self.dataset_options:
            return {}
        try:
            options = json.loads(self.dataset_options)
        except json.JSONDecodeError as error:
            raise ValueError(f"--dataset_options is not valid JSON ({error}): {self.dataset_options!r}") from None
        if not isinstance(options, dict):
            raise ValueError(f"--dataset_options must be a JSON object, got {self.dataset_options!r}.")
        return options

    @property
    def dataset_name(self) -> str:
        """The builder name, or the folder's name for a saved data set."""
        return os.path.basename(os.path.normpath(self.dataset)) if os.path.isdir(self.dataset) else self.dataset

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingLoopArguments(DataArguments):
    """Options both loops share: data, initial weights, optimisation, devices, checkpoints and logging."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Where checkpoints, logs, metrics and the trained model go (required)."}
    )
    train_split: str = field(default="train", metadata={"help": "The split to train on."})

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Initial weights: a CLEF checkpoint, or a CLIP checkpoint in transformers' format (OpenAI "
                          "CLIP, or FaRL converted with scripts/convert_farl.py); a folder or a Hub id."},
    )
    config_file: str | None = field(
        default=None,
        metadata={"help": "Train from scratch: a CLEFConfig JSON. The package's own CLIP tokenizer is used and the text "
                          "config's vocabulary and special tokens are set from it."},
    )

    per_device_train_batch_size: int = field(default=64, metadata={"help": "Images per device and step (paper: 64)."})
    learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate of AdamW."})
    text_learning_rate_factor: float = field(
        default=1.0, metadata={"help": "The text encoder and the logit scale learn at this multiple of the rate."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (paper: 0.01)."})
    layer_decay: float = field(
        default=1.0, metadata={"help": "Layer-wise rate decay of the image encoder: layer i of L learns at "
                                       "layer_decay ** (L + 1 - i) times the rate (1: off, the paper's)."}
    )
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    fused_adamw: bool = field(
        default=False, metadata={"help": "AdamW's fused kernel (torch's `fused=True`, CPU and CUDA) instead of the "
                                         "implementation torch picks (a loop per tensor on CPU). On the demo model on "
                                         "CPU it made stage 2 1.06x faster and stage 0 no faster "
                                         "(benchmarks/fused_adamw.py), so it is off; the two agree to rounding."}
    )
    max_grad_norm: float | None = field(default=None, metadata={"help": "Clip gradients to this norm (off if unset)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs to train."})
    warmup_epochs: float = field(default=1.0, metadata={"help": "Epochs of linear warm-up before the cosine decay."})
    min_learning_rate: float = field(default=1e-6, metadata={"help": "The cosine decay ends here (paper: 1e-6)."})
    max_steps: int = field(default=-1, metadata={"help": "If > 0: stop after this many optimizer steps."})
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16.", "choices": ["no", "fp16", "bf16"]})
    cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if an accelerator is present."})
    seed: int = 42

    crop_scale_min: float = field(default=0.8, metadata={"help": "Random resized crop: smallest area fraction."})
    flip_probability: float = 0.5
    max_rotation_degrees: float = 10.0
    color_jitter: float = field(default=0.0, metadata={"help": "Per-channel gain/offset jitter (0: off)."})

    checkpointing_steps: int = field(default=500, metadata={"help": "Save the training state every N optimizer steps."})
    checkpoints_total_limit: int = field(default=2, metadata={"help": "Keep at most this many training states."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "`latest`, or a checkpoint folder under output_dir/checkpoints."}
    )
    logging_steps: int = 10
    report_to: str = field(default="tensorboard", metadata={"help": "An Accelerate tracker, `all` or `none`."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.output_dir:
            raise ValueError("--output_dir is required.")
        if (self.model_name_or_path is None) == (self.config_file is None):
            raise ValueError("Pass exactly one of --model_name_or_path (initial weights) and --config_file (scratch).")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "checkpointing_steps",
                     "checkpoints_total_limit", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"--layer_decay must be in (0, 1], got {self.layer_decay}.")
        for name in ("num_train_epochs", "warmup_epochs", "weight_decay", "min_learning_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}.")
        self.augmentation  # validates the augmentation fields

    @property
    def augmentation(self) -> AugmentationConfig:
        return AugmentationConfig(
            crop_scale=(self.crop_scale_min, 1.0),
            flip_probability=self.flip_probability,
            max_rotation_degrees=self.max_rotation_degrees,
            color_jitter=self.color_jitter,
        )


@dataclass
class PretrainingArguments(TrainingLoopArguments):
    """Stage 1: images of the same recorded activity are positives (Eq. 1-2). With `pretraining_losses="image_text"`,
    stage 0: images and their captions are pairs (CLIP's loss, as FaRL pre-trains), at the learnable temperature."""

    learning_rate: float | None = field(
        default=1e-4, metadata={"help": "Peak learning rate; the paper does not state the pre-training rate."}
    )
    pretraining_losses: str = field(
        default="image_activity",
        metadata={"help": "image_activity: Eq. 2, L_IĨ + L_IA (Table 6's PA); image: L_IĨ alone (PI); "
                          "self_supervised: SimCLR-style, each image's two views are its only positives (needs no "
                          "activity labels); emoco: EmoCo's Eq. 1, emotion classification plus emotion-aware "
                          "contrast against a momentum encoder's multi-queue dictionary (needs expression labels); "
                          "image_text: stage 0, FaRL's (CLIP's) symmetric image-caption contrastive loss at the "
                          "model's learnable temperature (needs a caption column, see --caption_column).",
                  "choices": list(PRETRAINING_LOSSES)},
    )
    caption_column: str = field(
        default="caption", metadata={"help": "image_text: the column holding each image's caption (a string)."}
    )
    temperature: float | None = field(
        default=None,
        metadata={"help": "The fixed ε of Eq. 1; defaults to the config's pretraining_temperature, 0.25 (not used by "
                          "image_text, which learns its temperature)."},
    )
    model_output_dir: str | None = field(
        default=None, metadata={"help": "Where the pre-trained CLEF model goes (default: output_dir/model)."}
    )
    emoco_queue_size: int = field(default=65536, metadata={"help": "EmoCo: keys per emotion queue, K (paper: 65536)."})
    emoco_momentum: float = field(default=0.999, metadata={"help": "EmoCo: momentum m of Eq. 3 (paper: 0.999)."})
    emoco_temperature: float = field(default=0.2, metadata={"help": "EmoCo: τ of Eq. 5 (paper: 0.2)."})
    emoco_loss_weight: float = field(default=1.0, metadata={"help": "EmoCo: λ of Eq. 1, on L_emo (paper: 1)."})
    emoco_feature_dim: int = field(
        default=128, metadata={"help": "EmoCo: output size of the MLP projection head, the keys' size (paper: 128)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pretraining_losses not in PRETRAINING_LOSSES:
            raise ValueError(f"--pretraining_losses must be one of {PRETRAINING_LOSSES}, got {self.pretraining_losses!r}.")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}.")
        if self.pretraining_losses == "image_text" and self.temperature is not None:
            raise ValueError("--temperature is the fixed ε of Eq. 1; --pretraining_losses image_text learns its "
                             "temperature (the model's logit_scale): leave --temperature unset.")
        if not self.caption_column:
            raise ValueError("--caption_column must name a column, got an empty string.")
        for name in ("emoco_queue_size", "emoco_feature_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if not 0 <= self.emoco_momentum < 1:
            raise ValueError(f"--emoco_momentum must lie in [0, 1), got {self.emoco_momentum}.")
        if self.emoco_temperature <= 0:
            raise ValueError(f"--emoco_temperature must be > 0, got {self.emoco_temperature}.")
        if self.emoco_loss_weight < 0:
            raise ValueError(f"--emoco_loss_weight must be >= 0, got {self.emoco_loss_weight}.")
        if self.model_output_dir is None:
            self.model_output_dir = os.path.join(self.output_dir, "model")


@dataclass
class FineTuningArguments(TrainingLoopArguments):
    """Stage 2: AU detection (Eq. 5) or expression recognition (Eq. 4), with Eq. 3 and 6."""

    task: str | None = field(
        default=None,
        metadata={"help": "au or expression; inferred when the data set has only one kind of label.",
                  "choices": ["au", "expression"]},
    )
    components: str = field(
        default="IND",
        metadata={"help": "Table 6: I (image encoder, linear head), IN (+ label names), IND (+ descriptions: CLEF); "
                          "ID: descriptions without names (the poster's PA+PI+I+D row).",
                  "choices": list(COMPONENTS)},
    )
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs to train (the paper does not say)."})
    eval_split: str = field(
        default="validation",
        metadata={"help": "The held-out split evaluated after each epoch; it picks the best epoch and the AU "
                          "threshold, so it must not be the split you report (a data set with only train and test "
                          "can pass --eval_split test --test_split '' knowingly)."},
    )
    test_split: str | None = field(
        default="test",
        metadata={"help": "The split evaluated once, at the end, with the best model; empty to skip."},
    )
    select_au_threshold: bool = field(
        default=True,
        metadata={"help": "AUs: at the best epoch, choose the probability threshold (0.05 to 0.95) that maximises "
                          "the mean F1 on --eval_split, and save it as the model's config.au_threshold."},
    )
    select_test_time_flip: bool = field(
        default=False,
        metadata={"help": "At the best epoch, score --eval_split with and without test-time mirroring (an image's "
                          "embedding the mean of its own and its mirror image's) and save the better way as the "
                          "model's config.test_time_flip (ties: without; AUs: each way at its own best threshold). "
                          "Not in the paper; inference then costs two image passes."},
    )
    per_device_eval_batch_size: int = 128
    text_warmup_steps: int = field(
        default=0,
        metadata={"help": "Steps of Eq. 3 alone before fine-tuning, to spread the label names apart when the text "
                          "encoder is untrained (not in the paper; useful from scratch)."},
    )
    best_model_dir: str | None = field(
        default=None, metadata={"help": "Where the best model goes, ready for the Hub (default: output_dir/best)."}
    )
    objective: str = field(
        default="clef",
        metadata={"help": "clef: CLEF's stage 2 with --components; cl_ile: CL-ILE's stage I (ID encoder and "
                          "identity-label embeddings, Eq. 3) then stage II (Eq. 6), for AUs, on data with a subject "
                          "column.", "choices": list(OBJECTIVES)},
    )
    au_intensity: bool = field(
        default=False,
        metadata={"help": "AUs: also train the intensity phrases of each AU name (\"no\", \"a trace of\", \"slight\", "
                          "\"pronounced\", \"extreme\", \"maximum\" lip corner puller) with Eq. I, a softmax over "
                          "the image-phrase similarities (losses.au_intensity_loss), on the data's au_intensity column. "
                          "The saved model predicts intensity (0-5); the best epoch is the one with the highest mean "
                          "ICC(3,1) on --eval_split. Needs --components IN or IND and --objective clef."},
    )
    intensity_loss_weight: float = field(
        default=1.0, metadata={"help": "--au_intensity: the weight of Eq. I added to the fine-tuning loss."}
    )
    cl_ile_stage_one_fraction: float = field(
        default=0.5,
        metadata={"help": "CL-ILE: the share of the optimizer steps spent in stage I (the paper gives 20 epochs in all "
                          "on BP4D, not their split)."},
    )
    cl_ile_identity_bce_weight: float = field(default=0.4, metadata={"help": "CL-ILE: λ of Eq. 3 (paper: 0.4)."})
    cl_ile_bce_weight: float = field(default=1.0, metadata={"help": "CL-ILE: λ_1 of Eq. 6 (paper: 1)."})
    cl_ile_orthogonality_weight: float = field(default=0.5, metadata={"help": "CL-ILE: λ_2 of Eq. 6 (paper: 0.5)."})
    cl_ile_contrastive_weight: float = field(default=0.4, metadata={"help": "CL-ILE: λ_3 of Eq. 6 (paper: 0.4)."})
    cl_ile_temperature: float = field(default=2.0, metadata={"help": "CL-ILE: τ of Eq. 5 (paper: 2)."})
    cl_ile_orthogonality_floor: float = field(
        default=1e-6,
        metadata={"help": "CL-ILE: the floor on |cos| inside Eq. 4's log (not in the paper, whose log is unbounded "
                          "below). Near 0 the loss's gradient, 1/|cos|, spikes to hundreds of times the BCE's; on "
                          "the synthetic faces CL-ILE then does not learn (validation F1 0.35 with 1e-6, 0.66 with "
                          "0.1: docs/study/cl_ile.md)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.components not in COMPONENTS:
            raise ValueError(f"--components must be one of {COMPONENTS}, got {self.components!r}.")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"--objective must be one of {OBJECTIVES}, got {self.objective!r}.")
        if self.objective == "cl_ile" and self.task == "expression":
            raise ValueError("--objective cl_ile detects AUs (CL-ILE has no expression loss); use --task au.")
        if not 0 < self.cl_ile_stage_one_fraction < 1:
            raise ValueError(f"--cl_ile_stage_one_fraction must lie in (0, 1), got {self.cl_ile_stage_one_fraction}.")
        for name in ("cl_ile_identity_bce_weight", "cl_ile_bce_weight", "cl_ile_orthogonality_weight",
                     "cl_ile_contrastive_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        if not 0 < self.cl_ile_orthogonality_floor < 1:
            raise ValueError(f"--cl_ile_orthogonality_floor must lie in (0, 1), got {self.cl_ile_orthogonality_floor}.")
        if self.cl_ile_temperature <= 0:
            raise ValueError(f"--cl_ile_temperature must be > 0, got {self.cl_ile_temperature}.")
        if self.au_intensity:
            if self.task == "expression" or self.objective != "clef" or self.components not in ("IN", "IND"):
                raise ValueError(
                    "--au_intensity trains AU intensity phrases through the text encoder: it needs --task au, "
                    f"--objective clef and --components IN or IND; got --task {self.task}, --objective "
                    f"{self.objective}, --components {self.components}."
                )
            if not self.intensity_loss_weight >= 0:
                raise ValueError(f"--intensity_loss_weight must be >= 0, got {self.intensity_loss_weight}.")
        if self.task is not None and self.task not in ("au", "expression"):
            raise ValueError(f"--task must be au or expression, got {self.task!r}.")
        if self.learning_rate is None:
            self.learning_rate = PAPER_FINE_TUNING_LEARNING_RATES.get(
                self.dataset_name, DEFAULT_FINE_TUNING_LEARNING_RATE
            )
        if self.best_model_dir is None:
            self.best_model_dir = os.path.join(self.output_dir, "best")
        if not self.eval_split:
            raise ValueError("--eval_split must name the split that picks the best epoch, got an empty string.")
        if not self.test_split:
            self.test_split = None  # "" on the command line: no test split


@dataclass
class EvaluationArguments(DataArguments):
    """Evaluate a fine-tuned CLEF model on a split, with the label embeddings stored in the checkpoint."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "A fine-tuned CLEF checkpoint (required)."})
    split: str = field(default="test", metadata={"help": "The split to evaluate."})
    per_device_eval_batch_size: int = 128
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16.", "choices": ["no", "fp16", "bf16"]})
    cpu: bool = False
    output_file: str | None = field(default=None, metadata={"help": "Write the metrics to this JSON file."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("--model_name_or_path is required: the fine-tuned CLEF checkpoint to evaluate.")


__all__ = [
    "COMPONENTS",
    "DataArguments",
    "EvaluationArguments",
    "FineTuningArguments",
    "OBJECTIVES",
    "PAPER_FINE_TUNING_LEARNING_RATES",
    "PRETRAINING_LOSSES",
    "PretrainingArguments",
    "TrainingLoopArguments",
]

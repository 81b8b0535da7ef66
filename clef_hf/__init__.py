"""clef-hf: facial action unit detection and facial expression recognition with CLEF (Zhang et al., ICCV 2023).

Importing the package registers CLEF with transformers' auto classes, so `AutoConfig`, `AutoModel` and
`AutoProcessor` load CLEF checkpoints without `trust_remote_code`, and registers the `facial-behavior` pipeline task,
so that `transformers.pipeline("facial-behavior", model=...)` works. Saved checkpoints also carry the modeling code,
so users without the package can load them with `trust_remote_code=True` (and the pipeline, after
`add_remote_pipeline`).
"""

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .bpe_tokenizer import train_clip_tokenizer
from .configuration_clef import CLEFConfig
from .losses import (
    au_loss,
    expression_loss,
    fine_tuning_loss,
    image_text_contrastive_loss,
    name_description_loss,
    pretraining_loss,
    supervised_contrastive_loss,
)
from .modeling_clef import CLEFModel, CLEFOutput, CLEFPreTrainedModel
from .pipeline_facial_behavior import TASK as PIPELINE_TASK
from .pipeline_facial_behavior import FacialBehaviorPipeline, add_remote_pipeline, quantize_dynamic_int8
from .processing_clef import CLEFProcessor, TokenizerMismatchError, check_tokenizer_fits

__version__ = "0.1.0"

AutoConfig.register(CLEFConfig.model_type, CLEFConfig, exist_ok=True)
AutoModel.register(CLEFConfig, CLEFModel, exist_ok=True)
AutoProcessor.register(CLEFConfig, CLEFProcessor, exist_ok=True)
CLEFConfig.register_for_auto_class()
CLEFModel.register_for_auto_class("AutoModel")
CLEFProcessor.register_for_auto_class("AutoProcessor")
if PIPELINE_REGISTRY.supported_tasks.get(PIPELINE_TASK, {}).get("impl") is not FacialBehaviorPipeline:
    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=FacialBehaviorPipeline, pt_model=AutoModel, type="image"
    )

__all__ = [
    "CLEFConfig",
    "CLEFModel",
    "CLEFOutput",
    "CLEFPreTrainedModel",
    "CLEFProcessor",
    "FacialBehaviorPipeline",
    "TokenizerMismatchError",
    "add_remote_pipeline",
    "au_loss",
    "check_tokenizer_fits",
    "expression_loss",
    "fine_tuning_loss",
    "image_text_contrastive_loss",
    "name_description_loss",
    "pretraining_loss",
    "quantize_dynamic_int8",
    "supervised_contrastive_loss",
    "train_clip_tokenizer",
]

"""A real `pipeline("facial-behavior")` around the tiny CLEF model of conftest, and whether the task is registered.

Used by the video and visualization tests; the end-to-end tests skip when the task is not registered.
"""

from pathlib import Path


def facial_behavior_task_registered() -> bool:
    """True if importing `clef_hf` registers the "facial-behavior" pipeline task with transformers."""
    try:
        import clef_hf  # noqa: F401
        from transformers.pipelines import PIPELINE_REGISTRY
    except Exception:
        return False
    return "facial-behavior" in PIPELINE_REGISTRY.get_supported_tasks()


def build_facial_behavior_pipeline(model, processor, directory: Path):
    """Save `model` and `processor` to `directory` and load them back through `transformers.pipeline`."""
    from transformers import pipeline

    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return pipeline("facial-behavior", model=str(directory))

"""The `Accelerator` of a training run, its trackers (TensorBoard by default) and the JSON-lines metrics file
`output_dir/metrics.jsonl` that every logged value also goes to."""

import json
import os

from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

from .arguments import TrainingLoopArguments

METRICS_FILE = "metrics.jsonl"


def make_accelerator(args: TrainingLoopArguments, find_unused_parameters: bool = False) -> Accelerator:
    """Devices, mixed precision, gradient accumulation and trackers from the run's arguments.

    `find_unused_parameters` tells data-parallel training that some trainable parameters get no gradient in a step
    (CL-ILE trains its ID encoder, then its general encoder)."""
    return Accelerator(
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else None,
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
    )


def tracker_config(args: TrainingLoopArguments) -> dict:
    """The arguments as the flat scalars that TensorBoard's hyperparameter view accepts."""
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in args.to_dict().items()}


class MetricsLog:
    """Sends scalars to the Accelerate trackers and appends them, with their step, to `metrics.jsonl` (main process).

    When a run resumes at `resume_step`, what the interrupted run logged after its checkpoint is dropped, so the file
    reads as one uninterrupted run: the checkpoint records the file's size when it was saved (`metrics_bytes` in its
    `loop_state.json`), which also drops an evaluation logged at the checkpoint's own step after the save (the resumed
    run logs it again); without that record, lines of later steps are dropped. The file is rewritten atomically (a
    run killed while resuming keeps every line), and a last line cut short by a crash is dropped.
    """

    def __init__(self, accelerator: Accelerator, output_dir: str, resume_step: int | None = None):
        self.accelerator = accelerator
        self.path = os.path.join(output_dir, METRICS_FILE)
        if accelerator.is_main_process:
            os.makedirs(output_dir, exist_ok=True)
            kept = []
            if resume_step is not None and os.path.isfile(self.path):
                with open(self.path, "rb") as file:
                    data = file.read()
                cut = _checkpointed_size(output_dir, resume_step)
                if cut is not None and cut <= len(data) and (cut == 0 or data[cut - 1 : cut] == b"\n"):
                    data = data[:cut]
                pieces = data.decode("utf-8", "replace").split("\n")
                lines = [line for line in [piece + "\n" for piece in pieces[:-1]] + pieces[-1:] if line.strip()]
                for number, line in enumerate(lines):
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        if number == len(lines) - 1:  # the write a crash interrupted
                            break
                        raise ValueError(
                            f"{self.path}: entry {number + 1} is not a JSON line: {line[:200]!r}"
                        ) from None
                    if entry["step"] <= resume_step:
                        kept.append(line if line.endswith("\n") else line + "\n")
            temporary = self.path + ".tmp"
            with open(temporary, "w") as file:
                file.writelines(kept)
            os.replace(temporary, self.path)

    def log(self, values: dict, step: int) -> None:
        self.accelerator.log(values, step=step)
        if self.accelerator.is_main_process:
            with open(self.path, "a") as file:
                file.write(json.dumps({"step": step, **values}) + "\n")

    def log_training_window(self, loop_state: dict, step: int, learning_rate: float, epoch: int,
                            grad_norm: float | None, progress=None, **extra: float) -> float:
        """Log the mean loss of the batches since the last log (`loop_state`'s running sums, then reset), with the
        learning rate, any `extra` scalars that are not None (as `train/<name>`), the epoch and, when given, the
        gradient norm.

        Returns:
            The logged mean loss.
        """
        loss = loop_state["running_loss"] / max(1, loop_state["running_count"])
        values = {"train/loss": loss, "train/learning_rate": learning_rate,
                  **{f"train/{name}": value for name, value in extra.items() if value is not None}, "train/epoch": epoch}
        if grad_norm is not None:  # the global gradient norm before clipping, on the step just taken
            values["train/grad_norm"] = grad_norm
        self.log(values, step)
        if progress is not None:
            progress.set_postfix(loss=f"{loss:.4f}")
        loop_state["running_loss"], loop_state["running_count"] = 0.0, 0
        return loss


def _checkpointed_size(output_dir: str, step: int) -> int | None:
    """The size of the metrics file when the checkpoint of `step` under `output_dir` was saved, if it says."""
    from .checkpointing import CHECKPOINTS_DIR, LOOP_STATE_FILE

    path = os.path.join(output_dir, CHECKPOINTS_DIR, f"step-{step}", LOOP_STATE_FILE)
    try:
        with open(path) as file:
            size = json.load(file).get("metrics_bytes")
    except (OSError, ValueError):
        return None
    return size if isinstance(size, int) and size >= 0 else None


__all__ = ["METRICS_FILE", "MetricsLog", "make_accelerator", "tracker_config"]

"""The `Accelerator` of a training run, its trackers (TensorBoard by default) and the JSON-lines metrics file
`output_dir/metrics.jsonl` that every logged value also goes to."""

import json
import os

from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from .arguments import TrainingLoopArguments

METRICS_FILE = "metrics.jsonl"


def make_accelerator(args: TrainingLoopArguments) -> Accelerator:
    """Devices, mixed precision, gradient accumulation and trackers from the run's arguments."""
    return Accelerator(
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

    When a run resumes at `resume_step`, lines logged after that step by the interrupted run are dropped, so the file
    reads as one uninterrupted run. The file is rewritten atomically (a run killed while resuming keeps every line),
    and a last line cut short by a crash is dropped.
    """

    def __init__(self, accelerator: Accelerator, output_dir: str, resume_step: int | None = None):
        self.accelerator = accelerator
        self.path = os.path.join(output_dir, METRICS_FILE)
        if accelerator.is_main_process:
            os.makedirs(output_dir, exist_ok=True)
            kept = []
            if resume_step is not None and os.path.isfile(self.path):
                with open(self.path) as file:
                    lines = [line for line in file if line.strip()]
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


__all__ = ["METRICS_FILE", "MetricsLog", "make_accelerator", "tracker_config"]

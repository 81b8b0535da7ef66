"""The ablation study of the paper's Table 6 on the synthetic faces (`scripts/ablation_study.py`).

Four pre-training variants, each fine-tuned with Table 6's three fine-tuning components, for AUs and for expressions,
over several seeds, plus CL-ILE (Lian et al., BMVC 2023) as a second AU method:

- pre-training: `none` (fine-tuning starts from the seed's stage-0 model, or with `stage0_steps=0` from the random
  initialisation of `configs/demo_model.json`, drawn from the run's seed), `self_supervised` (SimCLR-style: an
  image's two views are its only positives), `image_activity`
  (CLEF's activity pre-training, Eq. 2, Table 6's PA) and `emoco` (EmoCo, Sun et al., FG 2021);
- fine-tuning components: `I` (image encoder and a linear head), `IN` (+ label names), `IND` (+ descriptions: CLEF),
  and the poster's `ID` (descriptions without names);
- tasks: `au` (mean AU F1 on the test subjects) and `expression` (accuracy on the test subjects);
- CL-ILE: its stage I then stage II, for AUs only (it has no expression loss), from no pre-training by default.

Every run starts, as the paper's do from FaRL, from one stage-0 model per seed: the demo's stage 0 (the image-caption
loss on captioned faces of other subjects, the same faces, batch and `stage0_steps` as `MainJobOptions`, so seed 0's
stage 0 is the demo's), or a finished stage-0 model given as `stage0_model` (e.g. the demo's `outputs/demo/stage0/model`),
or with `stage0_steps=0` the random initialisation. Model selection is honest:
the synthfaces split has train, validation and test subjects; the best epoch (and the AU threshold) of every
fine-tuning run is picked on the validation subjects, and the test subjects are read once, for the table.

The budget rule: every method gets the same budget. Every pre-training run trains for `pretraining_epochs` epochs and
every fine-tuning run, CL-ILE included (whose two stages share the steps), for `finetuning_epochs`; `max_steps`, when
set, caps every run alike. All runs use the same recipe ([`~training.recipes.SYNTHFACES_RECIPE`] and
[`~training.recipes.SYNTHFACES_FINETUNING`]), the same data and, per seed, the same seed. Pre-training runs once per
(variant, seed), and its model is shared by the fine-tuning runs of every component and task of that seed. `none` has
no pre-training at all, which is what it ablates. The recipe's label-text warm-up (`text_warmup_steps` of Eq. 3 on the
label texts alone, no images) runs before the fine-tuning steps of IN and IND, as in the demo.

[`study_plan`] lists the runs, [`run_study`] executes them (skipping finished ones, so an interrupted study resumes),
[`summarize`] reduces the per-run records to mean and standard deviation over the seeds, [`format_table`] writes the
Markdown table and [`ordering_checks`] tests the orderings that Table 6 reports on these numbers.
"""

import json
import logging
import os
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field, replace

from .arguments import COMPONENTS, FineTuningArguments, PretrainingArguments
from .checkpointing import CHECKPOINTS_DIR
from .finetune import finetune
from .main_job import MainJobOptions, check_worker_counts, job_executor
from .pretrain import pretrain
from .recipes import SYNTHFACES_FINETUNING, SYNTHFACES_MODEL_CONFIG, SYNTHFACES_RECIPE

logger = logging.getLogger(__name__)

#: The pre-training variants of the study, in the table's order: `none` or a `PretrainingArguments.pretraining_losses`.
PRETRAINING_VARIANTS = ("none", "self_supervised", "image_activity", "emoco")
#: Their names in the table.
PRETRAINING_NAMES = {
    "none": "none",
    "self_supervised": "self-supervised",
    "image_activity": "CLEF activity (PA)",
    "emoco": "EmoCo",
}
#: The fine-tuning tasks and the test-subject metric compared for each (the key of `finetune()["test"]`).
TASKS = ("au", "expression")
METRICS = {"au": "mean_f1", "expression": "accuracy"}
#: The method name of CL-ILE's rows (CLEF's rows are named by their components).
CL_ILE = "CL-ILE"
#: The trivial predictors of `finetune()["baseline"]`, by task.
BASELINE_NAMES = {"au": "trivial: all AUs present", "expression": "trivial: majority class"}
#: Synthfaces builder options of the study, and of its `--quick` smoke test.
DEFAULT_DATASET_OPTIONS = {"num_subjects": 28, "num_validation_subjects": 4, "num_test_subjects": 4,
                           "frames_per_activity": 16}
QUICK_DATASET_OPTIONS = {"num_subjects": 6, "num_validation_subjects": 1, "num_test_subjects": 2,
                         "frames_per_activity": 3}
#: The stage-0 captioned faces: subjects 1000 on, disjoint from every fine-tuning, validation and test subject; the
#: demo's (`MainJobOptions.stage0_data_options` with seed 0), except that the captions name at most 4 movements, as
#: they did when docs/study was measured (the demo's name every movement since docs/diagnosis.md, section 15; the
#: study has not been rerun with them), so that `make study` reproduces the published figures.
DEMO_OPTIONS = MainJobOptions()
STAGE0_DATASET_OPTIONS = {**DEMO_OPTIONS.stage0_data_options, "caption_movements": 4}
QUICK_STAGE0_DATASET_OPTIONS = {"first_subject": 1000, "num_subjects": 4, "num_test_subjects": 0,
                                "frames_per_activity": 2}
#: The pre-training variant name of the stage-0 runs.
STAGE0 = "stage0"
#: The model stage 0 starts from (its random initialisation); without stage 0, every run's start.
MODEL_CONFIG = SYNTHFACES_MODEL_CONFIG
#: A file each finished run leaves in its output_dir: the study's record of it (budget, seconds).
RECORD_FILE = "study_record.json"
NOT_APPLICABLE = "—"


@dataclass
class StudyOptions:
    """What the ablation study runs, and where it writes.

    Args:
        output_dir (`str`): The study's folder: one sub-folder per seed and run, `results.json` and `table.md`.
        seeds (`tuple[int]`): The seeds; every run is repeated with each.
        stage0_steps (`int`): The optimizer steps of each seed's stage-0 run (image-caption loss, batch
            `stage0_batch_size`); the demo's 2000 by default; 0: no stage 0, every run starts from the random
            initialisation.
        stage0_batch_size (`int`), stage0_learning_rate (`float`): Stage 0's batch and peak rate (the demo's: 64,
            5e-4).
        stage0_model (`str`, *optional*): A finished stage-0 model folder every seed starts from instead of training
            its own (e.g. the demo's `outputs/demo/stage0/model`); the study then has no stage-0 runs.
        stage0_dataset_options (`dict`): Options of the `synthfaces` builder for the stage-0 captioned faces.
        pretraining_epochs (`float`): The epochs of every pre-training run.
        finetuning_epochs (`float`): The epochs of every fine-tuning run (CL-ILE's two stages together).
        max_steps (`int`): If > 0, every run stops after this many optimizer steps (smoke tests).
        dataset_options (`dict`): Options of the `synthfaces` builder.
        pretraining_variants (`tuple[str]`): A subset of [`PRETRAINING_VARIANTS`].
        components (`tuple[str]`): A subset of `I`, `IN`, `IND`, `ID`.
        tasks (`tuple[str]`): A subset of `au`, `expression`.
        include_cl_ile (`bool`): Also run CL-ILE (when `au` is among the tasks).
        cl_ile_pretraining (`str`): The pre-training CL-ILE starts from; `none` or one of `pretraining_variants`.
        cl_ile_orthogonality_floor (`float`): The floor on |cos| in CL-ILE's Eq. 4 (`--cl_ile_orthogonality_floor`),
            chosen on the validation subjects: F1 0.346 / 0.402 / 0.659 / 0.693 for 1e-6 (the training loop's
            default) / 0.01 / 0.1 / 0.3 (docs/study/cl_ile.md).
        emoco_queue_size (`int`): EmoCo's keys per emotion queue; small, since the runs are a few hundred steps.
        emoco_momentum (`float`): EmoCo's key-encoder momentum; lower than the paper's for the same reason.
        model_config (`str`): The CLEFConfig JSON every run starts from.
        logging_steps (`int`), num_proc (`int`): Passed to the training arguments.
        checkpointing_steps (`int`): Large by default: runs are short, and a run without `all_results.json` is redone.
        keep_checkpoints (`bool`): Keep each finished run's training state (`checkpoints/`); off to save disk.
        workers (`int`), worker_threads (`int`): Runs side by side in `workers` processes of `worker_threads` torch
            threads each (`main_job.job_executor`); 1 runs everything in this process. Every run is seeded, so its
            figures do not depend on the worker that runs it.
    """

    output_dir: str = "outputs/study"
    seeds: tuple = (0, 1, 2)
    stage0_steps: int = DEMO_OPTIONS.stage0_steps
    stage0_batch_size: int = DEMO_OPTIONS.stage0_batch_size
    stage0_learning_rate: float = DEMO_OPTIONS.stage0_learning_rate
    stage0_model: str | None = None
    stage0_dataset_options: dict = field(default_factory=lambda: dict(STAGE0_DATASET_OPTIONS))
    pretraining_epochs: float = 2.0
    finetuning_epochs: float = 10.0
    max_steps: int = -1
    dataset_options: dict = field(default_factory=lambda: dict(DEFAULT_DATASET_OPTIONS))
    pretraining_variants: tuple = PRETRAINING_VARIANTS
    components: tuple = COMPONENTS
    tasks: tuple = TASKS
    include_cl_ile: bool = True
    cl_ile_pretraining: str = "none"
    cl_ile_orthogonality_floor: float = 0.3
    emoco_queue_size: int = 512
    emoco_momentum: float = 0.99
    model_config: str = MODEL_CONFIG
    logging_steps: int = 50
    num_proc: int = 2
    checkpointing_steps: int = 10**6
    keep_checkpoints: bool = False
    workers: int = 2
    worker_threads: int = 1

    def __post_init__(self) -> None:
        for name in ("seeds", "pretraining_variants", "components", "tasks"):
            setattr(self, name, tuple(getattr(self, name)))
        _check_subset("seeds", self.seeds, None)
        _check_subset("pretraining_variants", self.pretraining_variants, PRETRAINING_VARIANTS)
        _check_subset("components", self.components, COMPONENTS)
        _check_subset("tasks", self.tasks, TASKS)
        if self.pretraining_epochs <= 0 or self.finetuning_epochs <= 0:
            raise ValueError("pretraining_epochs and finetuning_epochs must be > 0.")
        if self.stage0_steps < 0 or self.stage0_batch_size < 1:
            raise ValueError(f"stage0_steps must be >= 0 (0: no stage 0) and stage0_batch_size >= 1, got "
                             f"{self.stage0_steps} and {self.stage0_batch_size}.")
        if self.stage0_model is not None and not os.path.isfile(os.path.join(self.stage0_model, "config.json")):
            raise ValueError(f"stage0_model {self.stage0_model!r} is not a saved model folder (no config.json); "
                             "give the `model` folder a stage-0 run wrote, e.g. outputs/demo/stage0/model.")
        check_worker_counts(self.workers, self.worker_threads)
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (off) or > 0, got {self.max_steps}.")
        if self.include_cl_ile and self.cl_ile_pretraining not in ("none",) + self.pretraining_variants:
            raise ValueError(f"cl_ile_pretraining {self.cl_ile_pretraining!r} must be `none` or one of "
                             f"pretraining_variants {self.pretraining_variants}.")

    @property
    def runs_cl_ile(self) -> bool:
        """Whether CL-ILE runs: asked for, and AUs are among the tasks (CL-ILE detects AUs only)."""
        return self.include_cl_ile and "au" in self.tasks

    def to_dict(self) -> dict:
        return asdict(self)


def _check_subset(name: str, values: tuple, allowed: tuple | None) -> None:
    if not values:
        raise ValueError(f"{name} must not be empty.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has duplicates: {values}.")
    if allowed is not None and not set(values) <= set(allowed):
        raise ValueError(f"{name} must be among {allowed}, got {values}.")


def quick_options(options: StudyOptions) -> StudyOptions:
    """The smoke-test form of `options`: a tiny data set, 4 optimizer steps per run and the first seed only."""
    return replace(options, dataset_options=dict(QUICK_DATASET_OPTIONS),
                   stage0_dataset_options=dict(QUICK_STAGE0_DATASET_OPTIONS), max_steps=4, seeds=options.seeds[:1])


@dataclass(frozen=True)
class StudyRun:
    """One run of the study.

    Args:
        kind (`str`): `stage0`, `pretrain` or `finetune`.
        seed (`int`): Its seed.
        pretraining (`str`): Its pre-training variant (for a fine-tuning run: the one it starts from).
        output_dir (`str`): Its own folder.
        num_train_epochs (`float`), max_steps (`int`): Its budget.
        task (`str`, *optional*): `au` or `expression` (fine-tuning only).
        components (`str`, *optional*): `I`, `IN`, `IND` or `ID` (CLEF fine-tuning only).
        objective (`str`, *optional*): `clef` or `cl_ile` (fine-tuning only).
        init_from (`str`, *optional*): The model folder it starts from (stage 0's, or a pre-training run's);
            `None`: the model config.
    """

    kind: str
    seed: int
    pretraining: str
    output_dir: str
    num_train_epochs: float
    max_steps: int
    task: str | None = None
    components: str | None = None
    objective: str | None = None
    init_from: str | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.output_dir)

    @property
    def method(self) -> str | None:
        """The table row's method: the components, or `CL-ILE`; `None` for pre-training."""
        if self.kind != "finetune":
            return None
        return CL_ILE if self.objective == "cl_ile" else self.components

    @property
    def saves_model(self) -> bool:
        """Whether the run is stage 0 or a pre-training run, whose product is a model (not a fine-tuning record)."""
        return self.kind in ("stage0", "pretrain")

    @property
    def model_dir(self) -> str:
        """Where a stage-0 or pre-training run saves its model."""
        return os.path.join(self.output_dir, "model")


def study_plan(options: StudyOptions) -> list[StudyRun]:
    """The study's runs in execution order: per seed, its stage-0 run (if `stage0_steps` and no `stage0_model`),
    then per pre-training variant its pre-training from stage 0 (unless `none`) and its fine-tuning runs (task by
    task, component by component); then CL-ILE for that seed.

    Returns:
        `list[StudyRun]`: every run comes after the run whose model it starts from.
    """
    plan = []
    for seed in options.seeds:
        seed_dir = os.path.join(options.output_dir, f"seed{seed}")
        start = options.stage0_model
        if options.stage0_steps and start is None:
            # One pass over the captioned faces at most: the run stops after `stage0_steps` (or the smoke test's cap).
            steps = options.max_steps if options.max_steps > 0 else options.stage0_steps
            stage0 = StudyRun("stage0", seed, STAGE0, os.path.join(seed_dir, "stage0"), 1.0, steps)
            plan.append(stage0)
            start = stage0.model_dir
        model_dirs = {"none": start}
        for variant in options.pretraining_variants:
            if variant != "none":
                run = StudyRun("pretrain", seed, variant, os.path.join(seed_dir, f"pretrain-{variant}"),
                               options.pretraining_epochs, options.max_steps, init_from=start)
                plan.append(run)
                model_dirs[variant] = run.model_dir
            for task in options.tasks:
                for components in options.components:
                    plan.append(StudyRun(
                        "finetune", seed, variant, os.path.join(seed_dir, f"finetune-{variant}-{components}-{task}"),
                        options.finetuning_epochs, options.max_steps, task, components, "clef", model_dirs[variant],
                    ))
        if options.runs_cl_ile:
            variant = options.cl_ile_pretraining
            plan.append(StudyRun(
                "finetune", seed, variant, os.path.join(seed_dir, f"finetune-{variant}-cl_ile-au"),
                options.finetuning_epochs, options.max_steps, "au", "I", "cl_ile", model_dirs[variant],
            ))
    check_plan(plan, options.stage0_model)
    return plan


def check_plan(plan: list[StudyRun], stage0_model: str | None = None) -> None:
    """Raise a `ValueError` unless the plan is fair and consistent: one budget for all stage-0 runs, one for all
    pre-training runs, one for all fine-tuning runs, one pre-training per (variant, seed), every start model trained
    earlier in the plan with the same seed (a pre-training run and a `none` fine-tuning run start from their seed's
    stage 0 when the plan has one, else `stage0_model`, the given stage-0 model of every seed), and one folder per
    run."""
    for kind in ("stage0", "pretrain", "finetune"):
        budgets = {(run.num_train_epochs, run.max_steps) for run in plan if run.kind == kind}
        if len(budgets) > 1:
            raise ValueError(f"The {kind} runs have different budgets (epochs, max_steps): {sorted(budgets)}.")
    folders = [run.output_dir for run in plan]
    if len(set(folders)) != len(folders):
        raise ValueError("Two runs share an output_dir.")
    pretrained, stage0 = {}, {}
    for run in plan:
        if run.kind == "stage0":
            if run.seed in stage0:
                raise ValueError(f"Stage 0 runs twice with seed {run.seed}.")
            stage0[run.seed] = run.model_dir
            continue
        if run.kind == "pretrain" or run.pretraining == "none":
            expected = stage0.get(run.seed, stage0_model)
            if run.init_from != expected:
                raise ValueError(f"{run.name} (seed {run.seed}) starts from {run.init_from}, not from its seed's "
                                 f"stage 0 ({expected}).")
        if run.kind == "pretrain":
            if (run.pretraining, run.seed) in pretrained.values():
                raise ValueError(f"{run.pretraining} is pre-trained twice with seed {run.seed}.")
            pretrained[run.model_dir] = (run.pretraining, run.seed)
        elif run.pretraining == "none":
            continue
        elif run.init_from is not None and pretrained.get(run.init_from) != (run.pretraining, run.seed):
            raise ValueError(f"{run.name} (seed {run.seed}) starts from {run.init_from}, which no earlier "
                             f"{run.pretraining} pre-training of seed {run.seed} writes.")
        elif run.init_from is None and run.pretraining != "none":
            raise ValueError(f"{run.name} claims {run.pretraining} pre-training but starts from scratch.")


def _shared_arguments(run: StudyRun, options: StudyOptions) -> dict:
    """The keyword arguments every run's training arguments share: data, recipe, seed, budget, logging."""
    return {
        "output_dir": run.output_dir, "seed": run.seed, "num_train_epochs": run.num_train_epochs,
        "max_steps": run.max_steps, "dataset": "synthfaces", "cache_dir": os.path.join(options.output_dir, "data"),
        "dataset_options": json.dumps(options.dataset_options, sort_keys=True), "num_proc": options.num_proc,
        "report_to": "none", "logging_steps": options.logging_steps,
        "checkpointing_steps": options.checkpointing_steps, "resume_from_checkpoint": "latest",
        **SYNTHFACES_RECIPE,
    }


def pretraining_arguments(run: StudyRun, options: StudyOptions) -> PretrainingArguments:
    """The `PretrainingArguments` of a stage-0 run (the image-caption loss on the stage-0 faces, from the model config)
    or of a pre-training run (`run.pretraining` as the losses, from stage 0's model or the model config)."""
    if run.kind == "stage0":
        shared = {**_shared_arguments(run, options),
                  "dataset_options": json.dumps(options.stage0_dataset_options, sort_keys=True),
                  "per_device_train_batch_size": options.stage0_batch_size,
                  "learning_rate": options.stage0_learning_rate}
        return PretrainingArguments(pretraining_losses="image_text", config_file=options.model_config,
                                    model_output_dir=run.model_dir, **shared)
    emoco = ({"emoco_queue_size": options.emoco_queue_size, "emoco_momentum": options.emoco_momentum}
             if run.pretraining == "emoco" else {})
    start = {"model_name_or_path": run.init_from} if run.init_from else {"config_file": options.model_config}
    return PretrainingArguments(pretraining_losses=run.pretraining, model_output_dir=run.model_dir, **start,
                                **emoco, **_shared_arguments(run, options))


def finetuning_arguments(run: StudyRun, options: StudyOptions) -> FineTuningArguments:
    """The `FineTuningArguments` of a fine-tuning run: from its pre-trained model, or from the model config."""
    start = {"model_name_or_path": run.init_from} if run.init_from else {"config_file": options.model_config}
    cl_ile = {"cl_ile_orthogonality_floor": options.cl_ile_orthogonality_floor} if run.objective == "cl_ile" else {}
    # The epoch and the AU threshold are picked on the validation subjects; the test subjects are read once.
    return FineTuningArguments(task=run.task, components=run.components, objective=run.objective, **start,
                               eval_split="validation", test_split="test", **SYNTHFACES_FINETUNING, **cl_ile,
                               **_shared_arguments(run, options))


def pretrain_record(run: StudyRun, result: dict, seconds: float | None) -> dict:
    """The study's record of a stage-0 or pre-training run, from `pretrain()`'s result."""
    return {
        "kind": run.kind, "seed": run.seed, "pretraining": run.pretraining, "name": run.name,
        "num_train_epochs": run.num_train_epochs, "max_steps": run.max_steps,
        "global_step": result.get("global_step"), "train_loss": result.get("train_loss"),
        "seconds": None if seconds is None else round(seconds, 1), "model_dir": run.model_dir,
    }


def finetune_record(run: StudyRun, result: dict, seconds: float | None) -> dict:
    """The study's record of a fine-tuning run, from `finetune()`'s result: the test-subject metric of the model
    chosen on validation (`value`), that model's validation metric at the same AU threshold (`validation`), and the
    trivial predictor's test metric (`baseline`)."""
    metric = METRICS[run.task]
    if result.get("test") is None or result.get("validation") is None:
        raise ValueError(
            f"{run.output_dir}/all_results.json has no test-split metrics: it was written before the study picked "
            "epochs on validation subjects and read the test subjects once. Delete that folder (or choose another "
            "output_dir) to run it again."
        )
    return {
        "kind": "finetune", "seed": run.seed, "pretraining": run.pretraining, "method": run.method,
        "objective": run.objective, "task": run.task, "name": run.name,
        "num_train_epochs": run.num_train_epochs, "max_steps": run.max_steps,
        "metric": metric, "value": result["test"][metric], "validation": result["validation"][metric],
        "baseline": result["test_baseline"][metric],
        "best_epoch": result["best_epoch"], "global_step": result["global_step"],
        "seconds": None if seconds is None else round(seconds, 1), "output_dir": run.output_dir,
    }


def is_finished(run: StudyRun) -> bool:
    """Whether a run has finished: a fine-tuning run wrote `all_results.json`, a pre-training run saved its model."""
    if run.saves_model:
        return os.path.isfile(os.path.join(run.model_dir, "config.json"))
    return os.path.isfile(os.path.join(run.output_dir, "all_results.json"))


def cached_record(run: StudyRun) -> dict:
    """The record of a finished run, read back from its folder.

    Raises a `ValueError` if the run was made with another budget than `run`'s (the study's options changed but its
    output_dir did not)."""
    saved = _read_json(os.path.join(run.output_dir, RECORD_FILE))
    if saved is not None:
        if (saved["num_train_epochs"], saved["max_steps"]) != (run.num_train_epochs, run.max_steps):
            raise ValueError(f"{run.output_dir} was run with {saved['num_train_epochs']} epochs and max_steps "
                             f"{saved['max_steps']}, not {run.num_train_epochs} and {run.max_steps}: choose another "
                             "output_dir, or delete it.")
        seconds = saved.get("seconds")
    else:
        seconds = None
    if run.saves_model:
        return pretrain_record(run, saved or {}, seconds)
    return finetune_record(run, _read_json(os.path.join(run.output_dir, "all_results.json")), seconds)


def _read_json(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


def _write_json(path: str, content) -> None:
    """Write JSON atomically: a reader sees the old file or the new one."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as file:
        json.dump(content, file, indent=1)
    os.replace(path + ".tmp", path)


def execute_run(run: StudyRun, options: StudyOptions) -> dict:
    """Train one run (or read it back if it has finished) and return its record."""
    if is_finished(run):
        logger.info("%s: finished before, read back", run.output_dir)
        return {**cached_record(run), "cached": True}
    started = time.perf_counter()
    if run.saves_model:
        record = pretrain_record(run, pretrain(pretraining_arguments(run, options)), time.perf_counter() - started)
    else:
        record = finetune_record(run, finetune(finetuning_arguments(run, options)), time.perf_counter() - started)
    _write_json(os.path.join(run.output_dir, RECORD_FILE), record)
    if not options.keep_checkpoints:
        shutil.rmtree(os.path.join(run.output_dir, CHECKPOINTS_DIR), ignore_errors=True)
    return {**record, "cached": False}


def run_study(options: StudyOptions) -> dict:
    """Run the study: every run of [`study_plan`], skipping those that have finished; then write `results.json`
    (options, every run's record, the summary and the ordering checks) and `table.md` to `options.output_dir`.

    Returns:
        `dict`: the summary of [`summarize`], with `stage0_model` (the given stage-0 model, or `None`).
    """
    plan = study_plan(options)
    records = [None] * len(plan)
    with job_executor(options.workers, options.worker_threads) as executor:
        # A run starts only from the models of the kinds before its own, so each kind runs as one wave.
        for kind in ("stage0", "pretrain", "finetune"):
            jobs = {}
            for index, run in enumerate(plan):
                if run.kind == kind:
                    logger.info("== [%d/%d] seed %d: %s", index + 1, len(plan), run.seed, run.name)
                    jobs[index] = executor.submit(execute_run, run, options)
            for index, job in jobs.items():
                records[index] = job.result()
    summary = {**summarize(records), "stage0_model": options.stage0_model}
    checks = ordering_checks(summary)
    _write_json(os.path.join(options.output_dir, "results.json"),
                {"options": options.to_dict(), "records": records, "summary": summary, "ordering_checks": checks})
    with open(os.path.join(options.output_dir, "table.md"), "w") as file:
        file.write(format_report(summary, checks))
    return summary


def statistics_over_seeds(by_seed: dict) -> dict:
    """Mean and sample standard deviation (0 for one seed) of `{seed: value}`.

    Returns:
        `dict`: `{"mean", "std", "n", "seeds", "values"}`, seeds ascending.
    """
    seeds = sorted(by_seed)
    values = [by_seed[seed] for seed in seeds]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "seeds": seeds, "values": values}


def study_budget(records: list[dict]) -> dict:
    """The one budget of the records' stage-0, pre-training and fine-tuning runs; a `ValueError` if the runs of a
    kind do not share one.

    Returns:
        `dict`: `{"stage0_steps", "pretraining_epochs", "finetuning_epochs", "max_steps"}` (`stage0_steps` and
        `pretraining_epochs` are `None` without such runs; `max_steps`, the cap of the pre-training and fine-tuning
        runs, -1 when off).
    """
    budgets = {}
    for kind in ("stage0", "pretrain", "finetune"):
        found = {(record["num_train_epochs"], record["max_steps"]) for record in records if record["kind"] == kind}
        if len(found) > 1:
            raise ValueError(f"The {kind} runs have different budgets (epochs, max_steps): {sorted(found)}.")
        budgets[kind] = found.pop() if found else (None, None)
    max_steps = {steps for kind, (_, steps) in budgets.items() if kind != "stage0" and steps is not None}
    if len(max_steps) > 1:
        raise ValueError(f"Pre-training and fine-tuning have different max_steps: {sorted(max_steps)}.")
    return {"stage0_steps": budgets["stage0"][1],
            "pretraining_epochs": budgets["pretrain"][0], "finetuning_epochs": budgets["finetune"][0],
            "max_steps": max_steps.pop() if max_steps else -1}


def _row_order(key: tuple[str, str]) -> tuple:
    pretraining, method = key
    if method == CL_ILE:
        return (1, PRETRAINING_VARIANTS.index(pretraining), 0)
    return (0, PRETRAINING_VARIANTS.index(pretraining), COMPONENTS.index(method))


def summarize(records: list[dict]) -> dict:
    """Reduce the runs' records to the table: per row, mean and standard deviation over the seeds of the test-subject AU F1
    and expression accuracy.

    Args:
        records (`list[dict]`): Records of [`finetune_record`] and [`pretrain_record`], e.g. `results.json`'s.

    Returns:
        `dict`: `{"seeds", "budget", "rows"}`. Rows come in the table's order: the pre-training variants in
        [`PRETRAINING_VARIANTS`]' order, each with its components `I`, `IN`, `IND`, `ID`; CL-ILE; the trivial baselines. Each
        row is `{"kind" ("clef", "cl_ile" or "baseline"), "pretraining", "method", "label", "au", "expression"}`,
        where a task's entry is [`statistics_over_seeds`]' dict, or `None` where the row has no such runs.
    """
    finetuned = [record for record in records if record["kind"] == "finetune"]
    if not finetuned:
        raise ValueError("No fine-tuning records to summarize.")
    cells, baselines = {}, {}
    for record in finetuned:
        cell = cells.setdefault((record["pretraining"], record["method"]), {}).setdefault(record["task"], {})
        if record["seed"] in cell:
            raise ValueError(f"Two records of {record['pretraining']} {record['method']} {record['task']} with seed "
                             f"{record['seed']}.")
        cell[record["seed"]] = record["value"]
        baselines.setdefault(record["task"], {}).setdefault(record["seed"], record["baseline"])
    rows = [_method_row(key, cells[key]) for key in sorted(cells, key=_row_order)]
    rows += [_baseline_row(task, baselines[task]) for task in TASKS if task in baselines]
    return {"seeds": sorted({record["seed"] for record in records}), "budget": study_budget(records), "rows": rows}


def _method_row(key: tuple[str, str], by_task: dict) -> dict:
    pretraining, method = key
    kind = "cl_ile" if method == CL_ILE else "clef"
    label = CL_ILE if kind == "cl_ile" else f"{PRETRAINING_NAMES[pretraining]} {method}"
    row = {"kind": kind, "pretraining": pretraining, "method": method, "label": label}
    return {**row, **{task: statistics_over_seeds(by_task[task]) if task in by_task else None for task in TASKS}}


def _baseline_row(task: str, by_seed: dict) -> dict:
    row = {"kind": "baseline", "pretraining": None, "method": None, "label": BASELINE_NAMES[task]}
    return {**row, **{other: statistics_over_seeds(by_seed) if other == task else None for other in TASKS}}


def format_cell(stats: dict | None, num_seeds: int) -> str:
    """`"0.387 ± 0.012"`, `"—"` for `None`, with `(n=2)` appended where fewer seeds than the study's were run."""
    if stats is None:
        return NOT_APPLICABLE
    cell = f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return cell if stats["n"] == num_seeds else f"{cell} (n={stats['n']})"


def _budget_line(summary: dict) -> str:
    budget, seeds = summary["budget"], summary["seeds"]
    parts = []
    if budget.get("stage0_steps") is not None:
        parts.append(f"{budget['stage0_steps']} stage-0 steps (image-caption loss, other subjects) for every start")
    elif summary.get("stage0_model"):
        parts.append(f"one stage-0 model ({summary['stage0_model']}) for every start")
    if budget["pretraining_epochs"] is not None:
        parts.append(f"{budget['pretraining_epochs']:g} pre-training epochs")
    parts.append(f"{budget['finetuning_epochs']:g} fine-tuning epochs")
    capped = f", each run capped at {budget['max_steps']} optimizer steps" if budget["max_steps"] > 0 else ""
    return (f"Table 6 on synthfaces, test subjects (epochs and AU thresholds chosen on validation subjects): mean ± "
            f"std over seeds {', '.join(map(str, seeds))}. "
            f"Same budget for every method: {' and '.join(parts)}{capped}.")


def _component_marks(row: dict) -> list[str]:
    if row["kind"] != "clef":
        return [NOT_APPLICABLE] * 3
    return ["✓" if letter in row["method"] else "" for letter in "IND"]


def _pretraining_cell(row: dict) -> str:
    if row["kind"] == "clef":
        return PRETRAINING_NAMES[row["pretraining"]]
    if row["kind"] == "cl_ile":
        return f"CL-ILE (pre-training: {PRETRAINING_NAMES[row['pretraining']]})"
    return row["label"]


def format_table(summary: dict) -> str:
    """The Markdown table of [`summarize`]'s summary, like the paper's Table 6, under a line stating seeds and budget.

    Returns:
        `str`: the header line, a blank line and the table, one row per summary row, ending with a newline.
    """
    lines = [_budget_line(summary), "",
             "| Pre-training | I | N | D | AU mean F1 (test subjects) | Expression accuracy |",
             "|---|:-:|:-:|:-:|:-:|:-:|"]
    num_seeds = len(summary["seeds"])
    for row in summary["rows"]:
        cells = [_pretraining_cell(row), *_component_marks(row),
                 format_cell(row["au"], num_seeds), format_cell(row["expression"], num_seeds)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cells(summary: dict) -> dict:
    """`{(pretraining, method): {task: statistics}}` of the method rows (not the baselines)."""
    return {(row["pretraining"], row["method"]): {task: row[task] for task in TASKS if row[task]}
            for row in summary["rows"] if row["kind"] != "baseline"}


def _label(key: tuple[str, str]) -> str:
    return CL_ILE if key[1] == CL_ILE else f"{PRETRAINING_NAMES[key[0]]} {key[1]}"


def _check(claim: str, task: str, predicate, named: dict, cells: dict) -> dict:
    """A claim tested on the means, and seed by seed on the seeds every compared row has (runs of one seed share
    their initialisation and data, so they pair).

    Args:
        predicate: `{name: value} -> bool`, the claim on one set of values.
        named: `{name: (pretraining, method)}`, the rows the claim compares.
        cells: [`_cells`] of the summary.

    Returns:
        `dict`: `{"claim", "task", "holds" (on the means), "values" ({name: mean}), "seeds_holding", "num_seeds"}`.
    """
    stats = {name: cells[key][task] for name, key in named.items()}
    means = {name: cell["mean"] for name, cell in stats.items()}
    common = sorted(set.intersection(*(set(cell["seeds"]) for cell in stats.values())))
    per_seed = [{name: cell["values"][cell["seeds"].index(seed)] for name, cell in stats.items()} for seed in common]
    return {"claim": claim, "task": task, "holds": bool(predicate(means)), "values": means,
            "seeds_holding": sum(bool(predicate(values)) for values in per_seed), "num_seeds": len(common)}


def _text_encoder_checks(cells: dict, pretraining: str, task: str) -> list[dict]:
    """(a) IN and IND beat I; (b) IND is at least IN; for one pre-training and task."""
    present = [c for c in COMPONENTS if task in cells.get((pretraining, c), {})]
    name, checks = PRETRAINING_NAMES[pretraining], []
    with_text = [c for c in ("IN", "IND") if c in present]
    if "I" in present and with_text:
        checks.append(_check(
            f"pre-training {name}: a text encoder ({', '.join(with_text)}) beats image-only I", task,
            lambda v: all(v[c] > v["I"] for c in with_text),
            {c: (pretraining, c) for c in ["I", *with_text]}, cells))
    if "IN" in present and "IND" in present:
        checks.append(_check(f"pre-training {name}: descriptions help, IND >= IN", task,
                             lambda v: v["IND"] >= v["IN"], {c: (pretraining, c) for c in ("IN", "IND")}, cells))
    return checks


def _best_row_check(cells: dict, task: str) -> list[dict]:
    """(c) CLEF activity pre-training with IND is the best row of the task (on the means; seed by seed, it beats the
    rows that are best on the means)."""
    ours = ("image_activity", "IND")
    others = {key: by_task[task]["mean"] for key, by_task in cells.items() if task in by_task and key != ours}
    if task not in cells.get(ours, {}) or not others:
        return []
    best = max(others, key=others.get)
    named = {"CLEF activity (PA) IND": ours, f"best other: {_label(best)}": best}
    return [_check("CLEF activity (PA) pre-training with IND is the best row", task,
                   lambda v: v["CLEF activity (PA) IND"] >= v[f"best other: {_label(best)}"], named, cells)]


def _pretraining_helps_checks(cells: dict, task: str) -> list[dict]:
    """(d) CLEF activity pre-training beats none, component by component."""
    checks = []
    for components in COMPONENTS:
        ours, none = ("image_activity", components), ("none", components)
        if task in cells.get(ours, {}) and task in cells.get(none, {}):
            checks.append(_check(f"{components}: CLEF activity (PA) pre-training beats none", task,
                                 lambda v: v["CLEF activity (PA)"] > v["none"],
                                 {"CLEF activity (PA)": ours, "none": none}, cells))
    return checks


def ordering_checks(summary: dict) -> list[dict]:
    """Table 6's orderings, tested on the summary's means and seed by seed (claims whose rows were not run are left
    out):

    (a) with a text encoder (IN, IND) fine-tuning beats image-only I, for each pre-training and task;
    (b) IND is at least IN, for each pre-training and task;
    (c) CLEF activity pre-training with IND is the best row of each task (CL-ILE included, baselines not);
    (d) CLEF activity pre-training beats no pre-training with the same components, for each task.

    Returns:
        `list[dict]`: `{"claim" (str), "task" (str), "holds" (bool, on the means), "values" ({name: mean}),
        "seeds_holding" (int), "num_seeds" (int)}` each, in the order (a)-(b) per pre-training and task, (c) per
        task, (d) per task and components.
    """
    cells = _cells(summary)
    tasks = [task for task in TASKS if any(task in by_task for by_task in cells.values())]
    pretrainings = [p for p in PRETRAINING_VARIANTS if any(key[0] == p and key[1] != CL_ILE for key in cells)]
    checks = [check for p in pretrainings for task in tasks for check in _text_encoder_checks(cells, p, task)]
    checks += [check for task in tasks for check in _best_row_check(cells, task)]
    checks += [check for task in tasks for check in _pretraining_helps_checks(cells, task)]
    return checks


def format_checks(checks: list[dict]) -> str:
    """The checks as a Markdown bullet list: whether each holds on the means, the task, the claim, the numbers and
    on how many seeds it holds."""
    lines = []
    for check in checks:
        values = ", ".join(f"{name} {value:.3f}" for name, value in check["values"].items())
        verdict = "holds" if check["holds"] else "does not hold"
        seeds = f"; on {check['seeds_holding']} of {check['num_seeds']} seeds" if check["num_seeds"] > 1 else ""
        lines.append(f"- **{verdict}** ({check['task']}): {check['claim']} ({values}{seeds})")
    return "\n".join(lines) + "\n" if lines else ""


def format_report(summary: dict, checks: list[dict]) -> str:
    """`table.md`: the table, then the orderings of Table 6 checked on it."""
    report = format_table(summary)
    if checks:
        report += ("\nThe orderings of the paper's Table 6, on these means, and on how many seeds each holds when the "
                   "runs of a seed are compared with each other:\n\n" + format_checks(checks))
    return report


__all__ = [
    "CL_ILE",
    "PRETRAINING_VARIANTS",
    "StudyOptions",
    "StudyRun",
    "check_plan",
    "finetune_record",
    "finetuning_arguments",
    "format_checks",
    "format_report",
    "format_table",
    "ordering_checks",
    "pretrain_record",
    "pretraining_arguments",
    "quick_options",
    "run_study",
    "study_plan",
    "summarize",
]

"""The main job (`make demo`): the paper's pipeline on the shipped synthetic faces, every row on one split.

1. builds `synthfaces` with subject-exclusive train / validation / test splits, and a stage-0 set of captioned faces
   from other subjects (`first_subject=1000`), disjoint from every fine-tuning and test subject;
2. fits the classical references (logistic regression on grey pixels and on HOG, C chosen on validation);
3. stage 0: image-caption pre-training (FaRL in miniature, `pretraining_losses="image_text"`);
4. stage 1: activity pre-training (Eq. 2) from the stage-0 model;
5. stage 2 for AUs and expressions from three starts (random init, stage 0, stage 0 + 1) with each of Table 6's
   label sides (I, IN, IND): the epoch and the AU threshold are chosen on validation, the test split is read once;
6. saves the full pipeline's IND models as `OUTPUT_DIR/au-model` and `OUTPUT_DIR/expression-model`;
7. writes `OUTPUT_DIR/results.json` and prints one table, every row on the test subjects;
8. AU intensity ([`run_intensity`]): one `--au_intensity` model from the stage 0 + 1 start, its intensity ICC(3,1),
   MAE and Pearson on the test subjects next to the trivial predictor (each AU's training mean).

A finished stage or run is read back from its `all_results.json` / saved model, so an interrupted job resumes.
"""

import json
import math
import multiprocessing
import os
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass

import torch

from dataset_builders import au_ids_of, build_dataset

from .arguments import FineTuningArguments, PretrainingArguments
from .evaluation import BEST_METRIC
from .finetune import finetune
from .pretrain import pretrain
from .recipes import SYNTHFACES_FINETUNING, SYNTHFACES_MODEL_CONFIG, SYNTHFACES_RECIPE
from .references import classical_references

#: The starts of stage 2, in the table's order: name -> the stages before it.
STARTS = ("random init", "stage 0", "stage 0 + 1")
#: Table 6's label sides.
COMPONENTS = ("I", "IN", "IND")
TASKS = ("au", "expression")


@dataclass
class MainJobOptions:
    """Sizes and budgets of the main job; the defaults fit about 15 minutes on 2 CPU cores.

    Attributes:
        output_dir: where everything goes.
        num_subjects, num_validation_subjects, num_test_subjects, frames_per_activity: the fine-tuning data.
        stage0_subjects, stage0_frames_per_activity: the stage-0 captioned faces (other subjects): 2400 identities
            with one frame per task, 19,200 faces; at that face count more identities were better on validation
            (I head: AU F1 / accuracy 0.681 / 0.611 for 300 x 8, 0.695 / 0.641 for 600 x 4, 0.714 / 0.648 for
            1200 x 2, 0.733 / 0.635 for 2400 x 1; docs/diagnosis.md, section 13).
        stage0_steps, stage0_batch_size: stage 0's budget in optimizer steps and its batch (each caption's image is
            told apart from the batch's other n - 1). The stage-0 settings were chosen on the validation subjects
            (docs/diagnosis.md, section 9).
        stage0_learning_rate: stage 0's peak rate, half the recipe's: on validation (I head, 6 epochs) 5e-4 gave
            AU F1 0.681 and accuracy 0.611 against 0.644 and 0.613 at 1e-3, 0.654 / 0.617 at 2.5e-4 and 0.480 / 0.404
            at 2e-3 (docs/diagnosis.md, section 11).
        stage1_epochs, finetuning_epochs: budgets; every stage-2 row gets the same. Stage 0's steps buy more than
            stage 2's epochs within the 15 minutes (on validation: 2500 stage-0 steps and 6 epochs beat 1500 steps
            and 7 epochs), so stage 0 gets 2000 steps (docs/diagnosis.md, section 9). Stage 2 gets 10 epochs: with
            the pixels processed once (`cache_pixel_values`), 10 epochs fit (607 s for the job on 2 cores of an AMD
            EPYC), and every one of the 18 rows scored higher on validation than at 6 epochs (AU F1 +0.02 to
            +0.07, accuracy +0.01 to +0.09; docs/diagnosis.md, section 14).
        test_time_flip: every row, CLEF and classical, chooses on the validation subjects whether to predict from
            each face and its mirror image together (`FineTuningArguments.select_test_time_flip`,
            `classical_references(select_test_time_flip=True)`); the saved models keep the choice in their config.
        seed: seed of data order, augmentation and initialisation.
        workers: processes that run independent stages and rows side by side ([`job_executor`]); 1 runs everything
            in this process.
        worker_threads: torch threads of each worker process (with `workers > 1`).
        quick: a tiny smoke test (few subjects, a few steps).
    """

    output_dir: str = "outputs/demo"
    num_subjects: int = 28
    num_validation_subjects: int = 4
    num_test_subjects: int = 4
    frames_per_activity: int = 16
    stage0_subjects: int = 2400
    stage0_frames_per_activity: int = 1
    stage0_steps: int = 2000
    stage0_batch_size: int = 64
    stage0_learning_rate: float = 5e-4
    stage1_epochs: float = 2
    finetuning_epochs: float = 10
    test_time_flip: bool = True
    seed: int = 0
    workers: int = 2
    worker_threads: int = 1
    quick: bool = False

    def __post_init__(self):
        if self.quick:
            self.num_subjects, self.num_validation_subjects, self.num_test_subjects = 6, 1, 2
            self.frames_per_activity, self.stage0_subjects, self.stage0_frames_per_activity = 3, 4, 2

    @property
    def data_options(self) -> dict:
        return {"num_subjects": self.num_subjects, "num_validation_subjects": self.num_validation_subjects,
                "num_test_subjects": self.num_test_subjects, "frames_per_activity": self.frames_per_activity,
                "seed": self.seed}

    @property
    def stage0_data_options(self) -> dict:
        return {"first_subject": 1000, "num_subjects": self.stage0_subjects, "num_test_subjects": 0,
                "frames_per_activity": self.stage0_frames_per_activity, "seed": self.seed}


def _read_json(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def run_pretraining(options: MainJobOptions, name: str, data_options: dict, epochs: float, **kwargs) -> dict:
    """Stage 0 or stage 1, or its record if it finished before (`OUTPUT_DIR/name/result.json`)."""
    folder = os.path.join(options.output_dir, name)
    record_path = os.path.join(folder, "result.json")
    record = _read_json(record_path)
    if record is not None:
        return record
    started = time.perf_counter()
    result = pretrain(PretrainingArguments(
        output_dir=folder, dataset="synthfaces", dataset_options=json.dumps(data_options),
        cache_dir=os.path.join(options.output_dir, "data"), num_proc=2, num_train_epochs=epochs,
        **{**SYNTHFACES_RECIPE, "seed": options.seed, "logging_steps": 20, "checkpointing_steps": 200,
           **({"max_steps": 3} if options.quick else {}), **kwargs},
    ))
    history = _read_training_losses(folder)
    record = {**result, "seconds": round(time.perf_counter() - started, 1), "first_losses": history[:3],
              "last_losses": history[-3:]}
    with open(record_path, "w") as file:
        json.dump(record, file, indent=1)
    return record


def _read_training_losses(folder: str) -> list[float]:
    """The logged training-window losses of a run (`metrics.jsonl` of `MetricsLog`), oldest first."""
    path = os.path.join(folder, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    losses = []
    with open(path) as file:
        for line in file:
            entry = json.loads(line)
            value = entry.get("train/loss", entry.get("loss"))
            if isinstance(value, (int, float)):
                losses.append(round(float(value), 4))
    return losses


def run_finetuning(options: MainJobOptions, task: str, start: str, components: str, starts: dict) -> dict:
    """One stage-2 row (read back if it finished before): validation picks the epoch and AU threshold, test once."""
    slug = f"{task}-{start.replace(' ', '').replace('+', '_')}-{components}"
    folder = os.path.join(options.output_dir, "runs", slug)
    done = _read_json(os.path.join(folder, "all_results.json"))
    if done is not None and done.get("test") is not None:
        return done
    initial = {"config_file": SYNTHFACES_MODEL_CONFIG} if starts[start] is None else \
        {"model_name_or_path": starts[start]}
    keep = start == STARTS[-1] and components == "IND"  # the full pipeline's model is the one saved
    return finetune(FineTuningArguments(
        output_dir=folder, task=task, components=components,
        best_model_dir=os.path.join(options.output_dir, f"{task}-model") if keep else None,
        dataset="synthfaces", dataset_options=json.dumps(options.data_options),
        cache_dir=os.path.join(options.output_dir, "data"), num_proc=2,
        num_train_epochs=options.finetuning_epochs, eval_split="validation", test_split="test",
        select_test_time_flip=options.test_time_flip, **SYNTHFACES_FINETUNING, **initial,
        **{**SYNTHFACES_RECIPE, "seed": options.seed, "logging_steps": 20, "checkpointing_steps": 200,
           **({"max_steps": 4} if options.quick else {})},
    ))


def reference_rows(options: MainJobOptions) -> dict:
    """The classical references (logistic regression on pixels and on HOG, C chosen on validation) for both tasks,
    on the split every CLEF row uses (read from the data cache the main job built)."""
    splits = build_dataset("synthfaces", cache_dir=os.path.join(options.output_dir, "data"), **options.data_options)
    references = {}
    for task in TASKS:
        label_ids = au_ids_of(splits["train"]) if task == "au" else splits["train"].features["expression"].names
        references[task] = classical_references(splits["train"], splits["validation"], splits["test"], task,
                                                list(label_ids), select_test_time_flip=options.test_time_flip)
    return references


class _InlineExecutor(Executor):
    """Runs each submitted job at once in this process (`workers=1`): the same code path as the pool, one core."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # handed to whoever reads the result, as a pool's future does
            future.set_exception(error)
        return future


def _set_worker_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def check_worker_counts(workers: int, worker_threads: int) -> None:
    """Raise a `ValueError` unless there is at least one worker of at least one thread."""
    if workers < 1 or worker_threads < 1:
        raise ValueError(f"workers and worker_threads must be >= 1, got {workers} and {worker_threads}.")


def job_executor(workers: int, worker_threads: int) -> Executor:
    """Where the main job's stages and rows run: in this process for `workers=1`, else in a pool of `workers`
    processes (spawned, so that no torch state is forked) with `worker_threads` torch threads each.

    The models are small enough that a second torch thread speeds one run by about 15% on 2 cores, while a second
    process doubles the throughput; each run is seeded and runs on its own threads, so its figures do not depend on
    which worker runs it or on what runs beside it.
    """
    check_worker_counts(workers, worker_threads)
    if workers == 1:
        return _InlineExecutor()
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_set_worker_threads, initargs=(worker_threads,))


def run_main_job(options: MainJobOptions) -> dict:
    """Run every stage and row (resuming finished ones); return and write the summary (`results.json`).

    The stages' dependencies set the order: stage 0 (the longest job) starts first, the references and the
    random-init rows run beside it; stage 1 and the stage-0 rows follow stage 0; the stage 0 + 1 rows and the
    intensity model follow stage 1. With `options.workers` processes, independent jobs run side by side.
    """
    started = time.perf_counter()
    os.makedirs(options.output_dir, exist_ok=True)
    # Both data sets are prepared here, once, so that no two workers prepare the same cache.
    cache_dir = os.path.join(options.output_dir, "data")
    build_dataset("synthfaces", cache_dir=cache_dir, num_proc=2, **options.data_options)
    build_dataset("synthfaces", cache_dir=cache_dir, num_proc=2, **options.stage0_data_options)

    with job_executor(options.workers, options.worker_threads) as executor:
        # Stage 0 (captions, other subjects) first: everything but the random-init rows waits for it.
        stage0_job = executor.submit(
            run_pretraining, options, "stage0", options.stage0_data_options, 1.0,
            pretraining_losses="image_text", config_file=SYNTHFACES_MODEL_CONFIG,
            per_device_train_batch_size=options.stage0_batch_size, learning_rate=options.stage0_learning_rate,
            **({} if options.quick else {"max_steps": options.stage0_steps}))
        references_job = executor.submit(reference_rows, options)
        starts = {"random init": None}
        jobs = {task: {start: {} for start in STARTS} for task in TASKS}

        def submit_rows(start: str) -> None:
            for task in TASKS:
                for components in COMPONENTS:
                    jobs[task][start][components] = executor.submit(
                        run_finetuning, options, task, start, components, dict(starts))

        submit_rows("random init")
        stage0 = stage0_job.result()
        starts["stage 0"] = stage0["model_dir"]
        # Stage 1 (activities) from the stage-0 model, then the rows from each start.
        stage1_job = executor.submit(run_pretraining, options, "stage1", options.data_options, options.stage1_epochs,
                                     model_name_or_path=stage0["model_dir"])
        submit_rows("stage 0")
        stage1 = stage1_job.result()
        starts["stage 0 + 1"] = stage1["model_dir"]
        intensity_job = executor.submit(run_intensity, options, dict(starts))  # the longest of the last jobs first
        submit_rows("stage 0 + 1")
        runs = {task: {start: {c: job.result() for c, job in rows.items()} for start, rows in by_start.items()}
                for task, by_start in jobs.items()}
        references = references_job.result()
        intensity = intensity_job.result()

    summary = summarize(options, references, stage0, stage1, runs, time.perf_counter() - started)
    summary["intensity"] = intensity
    with open(os.path.join(options.output_dir, "results.json"), "w") as file:
        json.dump(summary, file, indent=1)
    return summary


def run_intensity(options: MainJobOptions, starts: dict, start: str = STARTS[-1]) -> dict:
    """One AU model trained with intensity phrases (`--au_intensity`, Eq. I) from `start`, with the stage-2 rows'
    recipe and budget; the epoch with the best validation ICC is tested once. Read back if it finished before.

    Returns:
        `{"start", "best_epoch", "seconds", "test": {"icc", "mae", "pearson", "per_au_icc", "mean_f1"},
        "validation_icc", "trivial": {"icc", "mae", "pearson"}}`: means over AUs on the test subjects; the trivial
        predictor gives every face each AU's mean training intensity (its ICC and Pearson are 0 by construction).
    """
    folder = os.path.join(options.output_dir, "runs", f"au-intensity-{start.replace(' ', '').replace('+', '_')}")
    result = _read_json(os.path.join(folder, "all_results.json"))
    started = time.perf_counter()
    if result is None or result.get("test") is None:
        initial = {"config_file": SYNTHFACES_MODEL_CONFIG} if starts[start] is None else \
            {"model_name_or_path": starts[start]}
        result = finetune(FineTuningArguments(
            output_dir=folder, task="au", components="IND", au_intensity=True,
            dataset="synthfaces", dataset_options=json.dumps(options.data_options),
            cache_dir=os.path.join(options.output_dir, "data"), num_proc=2,
            num_train_epochs=options.finetuning_epochs, eval_split="validation", test_split="test",
            select_test_time_flip=options.test_time_flip, **SYNTHFACES_FINETUNING, **initial,
            **{**SYNTHFACES_RECIPE, "seed": options.seed, "logging_steps": 20, "checkpointing_steps": 200,
               **({"max_steps": 4} if options.quick else {})},
        ))
    test, trivial = result["test"], result["test_intensity_baseline"]
    return {
        "start": start, "best_epoch": result["best_epoch"], "seconds": round(time.perf_counter() - started, 1),
        "test": {"icc": test["intensity_mean_icc"], "mae": test["intensity_mean_mae"],
                 "pearson": test["intensity_mean_pearson"], "per_au_icc": test["intensity_per_label_icc"],
                 "mean_f1": test["mean_f1"]},
        "validation_icc": result["validation"]["intensity_mean_icc"],
        "trivial": {"icc": trivial["intensity_mean_icc"], "mae": trivial["intensity_mean_mae"],
                    "pearson": trivial["intensity_mean_pearson"]},
        "model_dir": result["best_model_dir"],
    }


def format_intensity(intensity: dict) -> str:
    """The intensity lines of the demo's output: the model's and the trivial predictor's test figures."""
    model, trivial = intensity["test"], intensity["trivial"]
    return "\n".join([
        f"AU intensity (0-5), test subjects, mean over AUs; CLEF {intensity['start']} -> stage 2 (IND) + intensity "
        f"phrases, epoch {intensity['best_epoch']} chosen on validation ICC",
        f"{'model':<44}{'ICC(3,1)':>10}{'MAE':>8}{'Pearson':>9}",
        f"{'trivial (training mean per AU)':<44}{trivial['icc']:>10.3f}{trivial['mae']:>8.3f}{trivial['pearson']:>9.3f}",
        f"{'CLEF + intensity phrases':<44}{model['icc']:>10.3f}{model['mae']:>8.3f}{model['pearson']:>9.3f}",
    ])


def summarize(options, references, stage0, stage1, runs, seconds) -> dict:
    """The figures `make demo` prints and the README quotes, all on the test subjects."""
    batch = SYNTHFACES_RECIPE["per_device_train_batch_size"]
    table = {}
    for task in TASKS:
        key = BEST_METRIC[task]
        rows = {"trivial": references[task]["test_baseline"][key]}
        for name, row in references[task]["rows"].items():
            rows[name] = row["test"][key]
        for start in STARTS:
            for components in COMPONENTS:
                run = runs[task][start][components]
                rows[f"CLEF {start} -> stage 2 ({components})"] = run["test"][key]
        table[task] = {"metric": key, "rows": rows}
    full = {task: runs[task][STARTS[-1]]["IND"] for task in TASKS}
    return {
        "options": asdict(options),
        "table": table,
        "au": {"mean_f1": full["au"]["test"]["mean_f1"], "per_au_f1": full["au"]["test"]["per_label_f1"],
               "au_threshold": full["au"]["au_threshold"], "best_epoch": full["au"]["best_epoch"],
               "baseline_all_positive_f1": full["au"]["test_baseline"]["mean_f1"],
               "model_dir": os.path.join(options.output_dir, "au-model")},
        "expression": {"accuracy": full["expression"]["test"]["accuracy"],
                       "best_epoch": full["expression"]["best_epoch"],
                       "baseline_majority_accuracy": full["expression"]["test_baseline"]["accuracy"],
                       "model_dir": os.path.join(options.output_dir, "expression-model")},
        "validation": {task: {f"{start} ({c})": runs[task][start][c]["validation"][BEST_METRIC[task]]
                              for start in STARTS for c in COMPONENTS} for task in TASKS},
        "references": references,
        "stage0": stage0,
        "stage1": {**stage1, "chance_loss": round(2 * math.log(2 * batch - 1), 4)},
        "seconds": round(seconds, 1),
    }


def format_table(summary: dict) -> str:
    """The table `make demo` prints: every row's test figure, the classical references among them."""
    lines = ["Test subjects of synthfaces (epochs and AU thresholds chosen on the validation subjects)"]
    au, expression = summary["table"]["au"]["rows"], summary["table"]["expression"]["rows"]
    lines.append(f"{'model':<44}{'AU mean F1':>12}{'expression acc':>16}")
    for name in au:
        lines.append(f"{name:<44}{au[name]:>12.3f}{expression[name]:>16.3f}")
    stage1 = summary["stage1"]
    lines.append(f"\nstage 1 loss: first windows {stage1['first_losses']}, last {stage1['last_losses']} "
                 f"(chance, identical features: 2 log(2n-1) = {stage1['chance_loss']})")
    lines.append(f"{summary['seconds']:.0f} s in all; models in {summary['au']['model_dir']} and "
                 f"{summary['expression']['model_dir']}")
    if "intensity" in summary:
        lines.append("\n" + format_intensity(summary["intensity"]))
    return "\n".join(lines)


__all__ = ["COMPONENTS", "MainJobOptions", "STARTS", "format_intensity", "format_table", "run_intensity",
           "run_main_job"]

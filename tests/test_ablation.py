"""The ablation study's pure parts (clef_hf.training.ablation): the plan and its budget rule, the training arguments
of each run, the records, the summary over seeds, the Table 6 layout and the ordering checks. Nothing here trains: the
results are dicts shaped like `finetune()`'s, built by hand."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import statistics  # noqa: E402
from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402

from clef_hf.training.ablation import (  # noqa: E402
    CL_ILE,
    DEFAULT_DATASET_OPTIONS,
    MODEL_CONFIG,
    QUICK_DATASET_OPTIONS,
    QUICK_STAGE0_DATASET_OPTIONS,
    RECORD_FILE,
    STAGE0_DATASET_OPTIONS,
    StudyOptions,
    cached_record,
    check_plan,
    finetune_record,
    finetuning_arguments,
    format_checks,
    format_report,
    format_table,
    is_finished,
    ordering_checks,
    pretrain_record,
    pretraining_arguments,
    quick_options,
    run_study,
    study_plan,
    summarize,
)
from clef_hf.training.main_job import MainJobOptions  # noqa: E402
from clef_hf.training.recipes import SYNTHFACES_RECIPE  # noqa: E402

METRIC = {"au": "mean_f1", "expression": "accuracy"}
BASELINE = {"au": 0.25, "expression": 0.125}
#: Test-subject metric by pre-training, then method; seed 0 gets -0.01 and seed 1 +0.01 (mean: the value, std: 0.01414).
AU_VALUES = {
    "none": {"I": 0.30, "IN": 0.35, "IND": 0.36, "ID": 0.33},
    "self_supervised": {"I": 0.32, "IN": 0.37, "IND": 0.38, "ID": 0.34},
    "image_activity": {"I": 0.40, "IN": 0.45, "IND": 0.46, "ID": 0.43},
    "emoco": {"I": 0.35, "IN": 0.40, "IND": 0.41, "ID": 0.38},
}
CL_ILE_AU = 0.38
EXPRESSION_VALUES = {
    "none": {"I": 0.20, "IN": 0.25, "IND": 0.26, "ID": 0.34},  # ID above PA's ID: claim (d) fails for ID
    "self_supervised": {"I": 0.22, "IN": 0.21, "IND": 0.28, "ID": 0.24},  # IN below I: claim (a) fails here
    "image_activity": {"I": 0.30, "IN": 0.35, "IND": 0.36, "ID": 0.33},
    "emoco": {"I": 0.31, "IN": 0.50, "IND": 0.41, "ID": 0.33},  # IND below IN, and IN best of all: (b) and (c) fail
}
SEED_OFFSET = {0: -0.01, 1: 0.01, 2: 0.0}
#: The validation metric of the chosen epoch lies this far above the test metric, and the trivial predictor's
#: validation metric this far above its test metric, so that a record taking the wrong split is caught.
VALIDATION_GAP = 0.02
BASELINE_VALIDATION_GAP = 0.05


AU_THRESHOLD_GAIN = 0.005


def finetune_result(task: str, value: float, best_epoch: int = 6, global_step: int = 60) -> dict:
    """A dict shaped like `finetune()`'s return value: `value` is the test-subject metric of the chosen model, the
    validation metrics ("best", "baseline") differ from the test ones ("test", "test_baseline")."""
    metric = METRIC[task]
    per_label = {"per_label_f1": {"AU1": value}} if task == "au" else {"per_label_accuracy": {"happy": value}}
    test_baseline = {metric: BASELINE[task], **per_label}
    baseline = {metric: BASELINE[task] + BASELINE_VALIDATION_GAP, **per_label}
    if task == "expression":
        baseline["majority_class"] = test_baseline["majority_class"] = "neutral"
    validation = value + VALIDATION_GAP
    history = [{"epoch": epoch, "step": 6 * (epoch + 1), metric: validation - 0.1 * (epoch != best_epoch),
                **per_label} for epoch in range(10)]
    return {
        "baseline": baseline, "task": task, "components": "IND", "global_step": global_step,
        "eval_split": "validation", "test_split": "test",
        "best_epoch": best_epoch, "best_metric": validation, "best": history[best_epoch], "history": history,
        # AU runs: the chosen model's validation F1 at the threshold chosen on validation, above the epoch's own entry
        "validation": {**history[best_epoch], metric: validation + AU_THRESHOLD_GAIN * (task == "au")},
        "test": {metric: value, **per_label}, "test_baseline": test_baseline,
        "class_weights": [1.0], "best_model_dir": "somewhere/best",
    }


def value_of(run) -> float:
    if run.method == CL_ILE:
        base = CL_ILE_AU
    else:
        base = (AU_VALUES if run.task == "au" else EXPRESSION_VALUES)[run.pretraining][run.components]
    return base + SEED_OFFSET[run.seed]


def records_of(options: StudyOptions) -> list[dict]:
    """The records `run_study` would collect, from hand-made results."""
    records = []
    for index, run in enumerate(study_plan(options)):
        if run.kind in ("stage0", "pretrain"):
            result = {"global_step": 40, "train_loss": 2.5, "model_dir": run.model_dir}
            records.append(pretrain_record(run, result, 12.34))
        else:
            records.append(finetune_record(run, finetune_result(run.task, value_of(run)), 20.0 + index))
    return records


# The plan.


def test_the_default_plan_pretrains_once_per_variant_and_seed_and_shares_it_across_components_and_tasks():
    options = StudyOptions(finetuning_epochs=10)
    plan = study_plan(options)
    assert options.seeds == (0, 1, 2) and options.emoco_queue_size == 512 and options.emoco_momentum == 0.99
    stage0 = [run for run in plan if run.kind == "stage0"]
    pretraining = [run for run in plan if run.kind == "pretrain"]
    finetuning = [run for run in plan if run.kind == "finetune"]
    # per seed: stage 0, 3 pre-trainings, 4 starts x 4 components x 2 tasks, CL-ILE
    assert len(plan) == 3 * (1 + 3 + 4 * 4 * 2 + 1) == 111
    assert [run.seed for run in stage0] == [0, 1, 2]
    assert sorted((run.pretraining, run.seed) for run in pretraining) == sorted(
        (variant, seed) for variant in ("self_supervised", "image_activity", "emoco") for seed in (0, 1, 2))
    for pre in pretraining:
        assert pre.init_from == stage0[pre.seed].model_dir  # every pre-training starts from its seed's stage 0
        users = [run for run in finetuning if run.init_from == pre.model_dir]
        assert sorted((run.task, run.components) for run in users) == sorted(
            (task, components) for task in ("au", "expression") for components in ("I", "IN", "IND", "ID"))
        assert {(run.seed, run.pretraining, run.objective) for run in users} == {(pre.seed, pre.pretraining, "clef")}
        assert plan.index(pre) < min(plan.index(run) for run in users)
        assert plan.index(stage0[pre.seed]) < plan.index(pre)
    from_stage0 = [run for run in finetuning if run.init_from in {run.model_dir for run in stage0}]
    assert {run.pretraining for run in from_stage0} == {"none"} and len(from_stage0) == 3 * (8 + 1)
    assert not [run for run in plan if run.kind != "stage0" and run.init_from is None]


def test_without_stage0_the_none_rows_start_from_the_random_initialisation():
    plan = study_plan(StudyOptions(stage0_steps=0, seeds=(0,)))
    assert not [run for run in plan if run.kind == "stage0"]
    assert {run.pretraining for run in plan if run.init_from is None} == {"none", "self_supervised", "image_activity",
                                                                           "emoco"}


def test_a_given_stage0_model_is_every_seeds_start_and_replaces_the_stage0_runs(tmp_path):
    given = tmp_path / "stage0" / "model"
    given.mkdir(parents=True)
    (given / "config.json").write_text("{}")
    options = StudyOptions(stage0_model=str(given), seeds=(0, 1))
    plan = study_plan(options)
    assert not [run for run in plan if run.kind == "stage0"]
    starts = {run.init_from for run in plan if run.kind == "pretrain" or run.pretraining == "none"}
    assert starts == {str(given)}
    with pytest.raises(ValueError, match="not from its seed's stage 0"):
        check_plan(plan)  # without the given model, a start from outside the plan is foreign
    with pytest.raises(ValueError, match="no config.json"):
        StudyOptions(stage0_model=str(tmp_path / "missing"))
    summary = {**summarize(records_of(options)), "stage0_model": str(given)}
    assert summary["budget"]["stage0_steps"] is None
    assert f"one stage-0 model ({given}) for every start" in format_table(summary).splitlines()[0]


def test_every_method_gets_the_same_budget():
    plan = study_plan(StudyOptions(pretraining_epochs=8, finetuning_epochs=10))
    assert {(run.num_train_epochs, run.max_steps) for run in plan if run.kind == "stage0"} == {(1.0, 2000)}
    assert {(run.num_train_epochs, run.max_steps) for run in plan if run.kind == "pretrain"} == {(8, -1)}
    assert {(run.num_train_epochs, run.max_steps) for run in plan if run.kind == "finetune"} == {(10, -1)}
    cl_ile = [run for run in plan if run.objective == "cl_ile"]
    assert [(run.seed, run.task, run.pretraining, run.init_from, run.num_train_epochs) for run in cl_ile] == [
        (seed, "au", "none", f"outputs/study/seed{seed}/stage0/model", 10) for seed in (0, 1, 2)]


def test_run_folders_and_order_within_a_seed():
    plan = study_plan(StudyOptions(finetuning_epochs=10, output_dir="outputs/study", seeds=(0,)))
    names = [run.output_dir for run in plan]
    assert names[:10] == [
        "outputs/study/seed0/stage0",
        "outputs/study/seed0/finetune-none-I-au", "outputs/study/seed0/finetune-none-IN-au",
        "outputs/study/seed0/finetune-none-IND-au", "outputs/study/seed0/finetune-none-ID-au",
        "outputs/study/seed0/finetune-none-I-expression", "outputs/study/seed0/finetune-none-IN-expression",
        "outputs/study/seed0/finetune-none-IND-expression", "outputs/study/seed0/finetune-none-ID-expression",
        "outputs/study/seed0/pretrain-self_supervised",
    ]
    stage0 = plan[0]
    assert (stage0.kind, stage0.pretraining, stage0.method, stage0.init_from) == ("stage0", "stage0", None, None)
    assert stage0.model_dir == "outputs/study/seed0/stage0/model"
    assert {run.init_from for run in plan[1:10]} == {stage0.model_dir}
    assert "outputs/study/seed0/pretrain-emoco" in names
    assert "outputs/study/seed0/finetune-emoco-IND-au" in names
    assert names[-1] == "outputs/study/seed0/finetune-none-cl_ile-au"
    emoco = plan[names.index("outputs/study/seed0/pretrain-emoco")]
    assert emoco.model_dir == "outputs/study/seed0/pretrain-emoco/model"


def test_subsets_and_quick_mode():
    options = StudyOptions(finetuning_epochs=10, seeds=[3, 4], pretraining_variants=["image_activity"], components=["IND"], tasks=["au"])
    plan = study_plan(options)
    assert [(run.kind, run.seed, run.pretraining, run.method) for run in plan] == [
        ("stage0", 3, "stage0", None), ("pretrain", 3, "image_activity", None),
        ("finetune", 3, "image_activity", "IND"), ("finetune", 3, "none", CL_ILE),
        ("stage0", 4, "stage0", None), ("pretrain", 4, "image_activity", None),
        ("finetune", 4, "image_activity", "IND"), ("finetune", 4, "none", CL_ILE),
    ]
    assert [run.init_from for run in plan] == [
        None, "outputs/study/seed3/stage0/model", "outputs/study/seed3/pretrain-image_activity/model",
        "outputs/study/seed3/stage0/model",
        None, "outputs/study/seed4/stage0/model", "outputs/study/seed4/pretrain-image_activity/model",
        "outputs/study/seed4/stage0/model",
    ]
    assert not any(run.objective == "cl_ile" for run in study_plan(replace(options, tasks=("expression",))))
    assert not any(run.objective == "cl_ile" for run in study_plan(replace(options, include_cl_ile=False)))
    quick = quick_options(options)
    assert quick.seeds == (3,) and quick.max_steps == 4 and quick.dataset_options == QUICK_DATASET_OPTIONS
    assert QUICK_DATASET_OPTIONS["num_validation_subjects"] == 1  # a validation split to pick the epoch on
    assert quick.stage0_dataset_options == QUICK_STAGE0_DATASET_OPTIONS and quick.stage0_steps == 2000
    assert {run.max_steps for run in study_plan(quick)} == {4}
    assert [run.kind for run in study_plan(quick)] == ["stage0", "pretrain", "finetune", "finetune"]
    assert options.max_steps == -1 and options.seeds == (3, 4)  # unchanged
    assert options.dataset_options == DEFAULT_DATASET_OPTIONS
    assert options.stage0_dataset_options == STAGE0_DATASET_OPTIONS


def test_a_mismatched_budget_or_a_foreign_start_model_is_detected():
    plan = study_plan(StudyOptions(finetuning_epochs=10, seeds=(0, 1)))
    check_plan(plan)
    for index, changed in [
        (next(i for i, run in enumerate(plan) if run.components == "IND"), {"num_train_epochs": 11}),
        (next(i for i, run in enumerate(plan) if run.objective == "cl_ile"), {"max_steps": 100}),
        (next(i for i, run in enumerate(plan) if run.kind == "pretrain"), {"num_train_epochs": 4}),
        (next(i for i, run in enumerate(plan) if run.kind == "stage0" and run.seed == 1), {"num_train_epochs": 5}),
    ]:
        broken = list(plan)
        broken[index] = replace(plan[index], **changed)
        with pytest.raises(ValueError, match="different budgets"):
            check_plan(broken)
    seed1 = next(run for run in plan if run.seed == 1 and run.pretraining == "emoco" and run.kind == "finetune")
    seed0_emoco = next(run for run in plan if run.seed == 0 and run.pretraining == "emoco" and run.kind == "pretrain")
    broken = [replace(run, init_from=seed0_emoco.model_dir) if run == seed1 else run for run in plan]
    with pytest.raises(ValueError, match="starts from"):
        check_plan(broken)
    first_finetune = next(i for i, run in enumerate(plan) if run.init_from == seed0_emoco.model_dir)
    with pytest.raises(ValueError, match="starts from"):  # fine-tuned before it is pre-trained
        check_plan([run for run in plan if run != seed0_emoco][:first_finetune] + [seed0_emoco])
    with pytest.raises(ValueError, match="pre-trained twice"):
        check_plan(plan + [replace(seed0_emoco, output_dir="elsewhere")])
    with pytest.raises(ValueError, match="share an output_dir"):
        check_plan(plan + [plan[0]])
    stage0 = {run.seed: run for run in plan if run.kind == "stage0"}
    with pytest.raises(ValueError, match="Stage 0 runs twice"):
        check_plan(plan + [replace(stage0[0], output_dir="elsewhere")])


@pytest.mark.parametrize("kind", ["none finetune", "cl_ile", "pretrain"])
@pytest.mark.parametrize("start", ["model config", "other seed's stage 0", "not yet trained stage 0"])
def test_a_run_that_does_not_start_from_its_seeds_stage0_is_refused(kind, start):
    """Every pre-training run and every `none` fine-tuning run (CL-ILE included) must start from the stage-0 model of
    its own seed, trained earlier in the plan: not from the model config, not from another seed's stage 0."""
    plan = study_plan(StudyOptions(finetuning_epochs=10, seeds=(0, 1)))
    check_plan(plan)
    stage0 = {run.seed: run for run in plan if run.kind == "stage0"}
    assert {run.init_from for run in stage0.values()} == {None}  # stage 0 itself starts from the model config
    pick = {"none finetune": lambda run: (run.kind, run.pretraining, run.objective) == ("finetune", "none", "clef"),
            "cl_ile": lambda run: run.objective == "cl_ile",
            "pretrain": lambda run: run.kind == "pretrain"}[kind]
    index = next(i for i, run in enumerate(plan) if run.seed == 1 and pick(run))
    victim = plan[index]
    assert victim.init_from == stage0[1].model_dir
    if start == "not yet trained stage 0":  # seed 1's stage 0 comes after the run that starts from it
        seed0 = [run for run in plan if run.seed == 0]
        check_plan(seed0 + [stage0[1], victim])
        broken = seed0 + [victim, stage0[1]]
    else:
        init_from = None if start == "model config" else stage0[0].model_dir
        broken = list(plan)
        broken[index] = replace(victim, init_from=init_from)
    with pytest.raises(ValueError, match=rf"{victim.name} \(seed 1\) starts from .*not from its seed's stage 0"):
        check_plan(broken)


@pytest.mark.parametrize("changes, message", [
    ({"seeds": ()}, "seeds must not be empty"),
    ({"seeds": (0, 0)}, "duplicates"),
    ({"pretraining_variants": ("none", "image")}, "pretraining_variants must be among"),
    ({"components": ("IND", "ND")}, "components must be among"),
    ({"tasks": ("va",)}, "tasks must be among"),
    ({"max_steps": 0}, "max_steps"),
    ({"finetuning_epochs": 0}, "must be > 0"),
    ({"stage0_steps": -1}, "stage0_steps must be >= 0"),
    ({"stage0_batch_size": 0}, "stage0_batch_size >= 1"),
    ({"workers": 0}, "workers and worker_threads must be >= 1"),
    ({"pretraining_variants": ("none",), "cl_ile_pretraining": "emoco"}, "cl_ile_pretraining"),
])
def test_study_options_are_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        StudyOptions(**changes)


# The training arguments of each run (built, not run).


def test_training_arguments_of_the_runs():
    options = StudyOptions(finetuning_epochs=10, output_dir="out", seeds=(1,), emoco_queue_size=256, emoco_momentum=0.95)
    plan = {run.name: run for run in study_plan(options)}
    stage0 = pretraining_arguments(plan["stage0"], options)
    stage0_model = os.path.join("out", "seed1", "stage0", "model")
    assert (stage0.pretraining_losses, stage0.config_file, stage0.model_name_or_path) == (
        "image_text", MODEL_CONFIG, None)  # stage 0 alone starts from the model config
    assert stage0.model_output_dir == stage0_model and stage0.output_dir == os.path.join("out", "seed1", "stage0")
    # The demo's faces, with the captions docs/study was measured on (at most 4 movements; the demo names all).
    assert json.loads(stage0.dataset_options) == STAGE0_DATASET_OPTIONS == {
        **MainJobOptions().stage0_data_options, "caption_movements": 4}
    assert stage0.per_device_train_batch_size == MainJobOptions().stage0_batch_size == 64
    assert stage0.learning_rate == MainJobOptions().stage0_learning_rate == 5e-4  # half the recipe's rate
    assert (stage0.num_train_epochs, stage0.max_steps) == (1.0, MainJobOptions().stage0_steps)  # the demo's stage 0
    emoco = pretraining_arguments(plan["pretrain-emoco"], options)
    assert (emoco.pretraining_losses, emoco.emoco_queue_size, emoco.emoco_momentum) == ("emoco", 256, 0.95)
    assert (emoco.config_file, emoco.model_name_or_path) == (None, stage0_model)
    assert emoco.model_output_dir == os.path.join("out", "seed1", "pretrain-emoco", "model")
    activity = pretraining_arguments(plan["pretrain-image_activity"], options)
    assert activity.pretraining_losses == "image_activity" and activity.emoco_queue_size == 65536  # not EmoCo's
    assert (activity.config_file, activity.model_name_or_path) == (None, stage0_model)
    assert pretraining_arguments(plan["pretrain-self_supervised"], options).pretraining_losses == "self_supervised"

    tuned = finetuning_arguments(plan["finetune-emoco-IN-expression"], options)
    assert (tuned.model_name_or_path, tuned.config_file) == (emoco.model_output_dir, None)
    assert (tuned.task, tuned.components, tuned.objective) == ("expression", "IN", "clef")
    described = finetuning_arguments(plan["finetune-image_activity-ID-au"], options)
    assert (described.components, described.model_name_or_path) == ("ID", activity.model_output_dir)
    none = finetuning_arguments(plan["finetune-none-I-au"], options)
    assert (none.model_name_or_path, none.config_file) == (stage0_model, None)
    cl_ile = finetuning_arguments(plan["finetune-none-cl_ile-au"], options)
    assert (cl_ile.objective, cl_ile.task, cl_ile.model_name_or_path, cl_ile.config_file, cl_ile.num_train_epochs) == (
        "cl_ile", "au", stage0_model, None, options.finetuning_epochs)
    # CL-ILE's floor in Eq. 4 is the study's (chosen on validation), not the loop's near-zero default
    assert (cl_ile.cl_ile_orthogonality_floor, none.cl_ile_orthogonality_floor) == (0.3, 1e-6)
    for args in (stage0, emoco, activity, tuned, described, none, cl_ile):
        assert (args.seed, args.dataset, args.report_to, args.checkpointing_steps) == (1, "synthfaces", "none", 10**6)
        assert args.cache_dir == os.path.join("out", "data")
        assert args.learning_rate == (5e-4 if args is stage0 else SYNTHFACES_RECIPE["learning_rate"])
        assert args.output_dir.startswith(os.path.join("out", "seed1", ""))
    for args in (emoco, activity, tuned, described, none, cl_ile):
        assert json.loads(args.dataset_options) == DEFAULT_DATASET_OPTIONS == {
            "num_subjects": 28, "num_validation_subjects": 4, "num_test_subjects": 4, "frames_per_activity": 16}
        assert args.per_device_train_batch_size == SYNTHFACES_RECIPE["per_device_train_batch_size"]
    for args in (tuned, described, none, cl_ile):  # the epoch is picked on validation, the test split read once
        assert (args.eval_split, args.test_split) == ("validation", "test")
    assert {tuned.num_train_epochs, none.num_train_epochs, described.num_train_epochs} == {10}
    assert {emoco.num_train_epochs, activity.num_train_epochs} == {2}  # the default pretraining_epochs
    assert tuned.text_warmup_steps == 100 and tuned.warmup_epochs == 1


# Records, caching.


def test_finetune_record_takes_the_best_epoch_and_the_baseline():
    run = next(run for run in study_plan(StudyOptions(finetuning_epochs=10, seeds=(2,))) if run.name == "finetune-emoco-IND-expression")
    record = finetune_record(run, finetune_result("expression", 0.4321, best_epoch=7, global_step=80), 12.345)
    # value and baseline: the test subjects; validation: the chosen epoch's metric on the validation subjects
    assert record == {
        "kind": "finetune", "seed": 2, "pretraining": "emoco", "method": "IND", "objective": "clef",
        "task": "expression", "name": "finetune-emoco-IND-expression", "num_train_epochs": 10.0, "max_steps": -1,
        "metric": "accuracy", "value": 0.4321, "validation": pytest.approx(0.4521), "baseline": 0.125,
        "best_epoch": 7, "global_step": 80, "seconds": 12.3, "output_dir": run.output_dir,
    }


def test_pretrain_records_keep_their_kind():
    plan = {run.name: run for run in study_plan(StudyOptions(finetuning_epochs=10, seeds=(1,)))}
    result = {"global_step": 40, "train_loss": 2.5}
    stage0, pre = pretrain_record(plan["stage0"], result, 1.0), pretrain_record(plan["pretrain-emoco"], result, 1.0)
    assert (stage0["kind"], stage0["pretraining"], stage0["num_train_epochs"], stage0["model_dir"]) == (
        "stage0", "stage0", 1.0, "outputs/study/seed1/stage0/model")
    assert (pre["kind"], pre["pretraining"], pre["num_train_epochs"]) == ("pretrain", "emoco", 2.0)


def test_finished_runs_are_read_back_and_a_changed_budget_is_refused(tmp_path):
    options = StudyOptions(finetuning_epochs=10, output_dir=str(tmp_path), seeds=(0,))
    plan = {run.name: run for run in study_plan(options)}
    tuned, pre, stage0 = plan["finetune-image_activity-IND-au"], plan["pretrain-image_activity"], plan["stage0"]
    assert not is_finished(tuned) and not is_finished(pre) and not is_finished(stage0)
    os.makedirs(tuned.output_dir)
    with open(os.path.join(tuned.output_dir, "all_results.json"), "w") as file:
        json.dump(finetune_result("au", 0.47, best_epoch=4), file)
    os.makedirs(pre.model_dir)
    open(os.path.join(pre.model_dir, "config.json"), "w").close()
    assert is_finished(tuned) and is_finished(pre) and not is_finished(stage0)
    os.makedirs(stage0.model_dir)
    open(os.path.join(stage0.model_dir, "config.json"), "w").close()
    assert is_finished(stage0)
    record = cached_record(tuned)
    assert (record["value"], record["validation"], record["baseline"], record["best_epoch"], record["seconds"]) == (
        0.47, pytest.approx(0.495), 0.25, 4, None)
    assert cached_record(pre)["global_step"] is None and cached_record(pre)["kind"] == "pretrain"
    with open(os.path.join(tuned.output_dir, "all_results.json"), "w") as file:  # a run from before the test split
        json.dump({**finetune_result("au", 0.47, best_epoch=4), "test": None}, file)
    with pytest.raises(ValueError, match="no test-split metrics"):
        cached_record(tuned)
    with open(os.path.join(tuned.output_dir, "all_results.json"), "w") as file:
        json.dump(finetune_result("au", 0.47, best_epoch=4), file)
    assert (cached_record(stage0)["kind"], cached_record(stage0)["global_step"]) == ("stage0", None)
    with open(os.path.join(stage0.output_dir, RECORD_FILE), "w") as file:
        json.dump(pretrain_record(stage0, {"global_step": 9}, 5.0), file)
    assert cached_record(stage0)["global_step"] == 9
    with pytest.raises(ValueError, match="another output_dir"):
        cached_record(replace(stage0, max_steps=1500))

    with open(os.path.join(tuned.output_dir, RECORD_FILE), "w") as file:
        json.dump({**record, "seconds": 33.0}, file)
    assert cached_record(tuned)["seconds"] == 33.0
    with pytest.raises(ValueError, match="another output_dir"):
        cached_record(replace(tuned, num_train_epochs=20.0))


# Summary, table, checks.


def test_summarize_gives_mean_and_std_over_seeds_in_the_table_order():
    records = records_of(StudyOptions(finetuning_epochs=10, seeds=(0, 1)))
    summary = summarize(records)
    assert summary["seeds"] == [0, 1]
    assert summary["budget"] == {"stage0_steps": 2000, "pretraining_epochs": 2.0, "finetuning_epochs": 10.0,
                                 "max_steps": -1}
    assert [(row["kind"], row["pretraining"], row["method"]) for row in summary["rows"]] == [
        ("clef", variant, components)
        for variant in ("none", "self_supervised", "image_activity", "emoco")
        for components in ("I", "IN", "IND", "ID")
    ] + [("cl_ile", "none", CL_ILE), ("baseline", None, None), ("baseline", None, None)]
    by_key = {(row["pretraining"], row["method"]): row for row in summary["rows"]}
    pa = by_key[("image_activity", "IND")]
    # the test-subject values, not the validation ones (0.02 higher)
    assert pa["au"]["values"] == pytest.approx([0.45, 0.47]) and pa["au"]["seeds"] == [0, 1]
    assert by_key[("none", "ID")]["expression"]["mean"] == pytest.approx(0.34)
    assert pa["au"]["mean"] == pytest.approx(0.46)
    assert pa["au"]["std"] == pytest.approx(0.0141421356)  # sample standard deviation: 0.02 / sqrt(2)
    assert pa["au"]["std"] == pytest.approx(statistics.stdev([0.45, 0.47]))
    assert pa["expression"]["mean"] == pytest.approx(0.36) and pa["expression"]["n"] == 2
    cl_ile = by_key[("none", CL_ILE)]
    assert cl_ile["au"]["mean"] == pytest.approx(0.38) and cl_ile["expression"] is None
    au_baseline, expression_baseline = summary["rows"][-2:]  # the trivial predictor on the test subjects
    assert (au_baseline["label"], au_baseline["au"]["mean"], au_baseline["au"]["std"],
            au_baseline["expression"]) == ("trivial: all AUs present", 0.25, 0.0, None)
    assert (expression_baseline["label"], expression_baseline["expression"]["mean"],
            expression_baseline["au"]) == ("trivial: majority class", 0.125, None)


def test_summarize_refuses_mixed_budgets_and_duplicate_seeds():
    records = records_of(StudyOptions(finetuning_epochs=10, seeds=(0, 1)))
    summarize(records)
    index = next(i for i, record in enumerate(records) if record.get("method") == "IN")
    with pytest.raises(ValueError, match="different budgets"):
        summarize(records[:index] + [{**records[index], "num_train_epochs": 5.0}] + records[index + 1:])
    index = next(i for i, record in enumerate(records) if record["kind"] == "pretrain")
    with pytest.raises(ValueError, match="different budgets"):
        summarize(records[:index] + [{**records[index], "max_steps": 7}] + records[index + 1:])
    index = next(i for i, record in enumerate(records) if record["kind"] == "stage0" and record["seed"] == 1)
    with pytest.raises(ValueError, match="different budgets"):
        summarize(records[:index] + [{**records[index], "num_train_epochs": 4.0}] + records[index + 1:])
    with pytest.raises(ValueError, match="different max_steps"):
        summarize([{**record, "max_steps": 7} if record["kind"] == "pretrain" else record for record in records])
    # stage 0's steps are its own budget, not the cap of the other runs
    assert summarize([{**record, "max_steps": 7} if record["kind"] == "stage0" else record
                      for record in records])["budget"]["stage0_steps"] == 7
    with pytest.raises(ValueError, match="Two records"):
        summarize(records + [records[-1]])
    with pytest.raises(ValueError, match="No fine-tuning"):
        summarize([record for record in records if record["kind"] in ("stage0", "pretrain")])


def test_format_table_is_table_6():
    summary = summarize(records_of(StudyOptions(finetuning_epochs=10, seeds=(0, 1))))
    lines = format_table(summary).splitlines()
    assert lines[0] == ("Table 6 on synthfaces, test subjects (epochs and AU thresholds chosen on validation "
                        "subjects): mean ± std over seeds 0, 1. Same budget for every method: 2000 stage-0 steps "
                        "(image-caption loss, other subjects) for every start and 2 pre-training epochs and 10 "
                        "fine-tuning epochs.")
    assert lines[1] == ""
    assert lines[2] == "| Pre-training | I | N | D | AU mean F1 (test subjects) | Expression accuracy |"
    assert lines[4:] == [
        "| none | ✓ |  |  | 0.300 ± 0.014 | 0.200 ± 0.014 |",
        "| none | ✓ | ✓ |  | 0.350 ± 0.014 | 0.250 ± 0.014 |",
        "| none | ✓ | ✓ | ✓ | 0.360 ± 0.014 | 0.260 ± 0.014 |",
        "| none | ✓ |  | ✓ | 0.330 ± 0.014 | 0.340 ± 0.014 |",
        "| self-supervised | ✓ |  |  | 0.320 ± 0.014 | 0.220 ± 0.014 |",
        "| self-supervised | ✓ | ✓ |  | 0.370 ± 0.014 | 0.210 ± 0.014 |",
        "| self-supervised | ✓ | ✓ | ✓ | 0.380 ± 0.014 | 0.280 ± 0.014 |",
        "| self-supervised | ✓ |  | ✓ | 0.340 ± 0.014 | 0.240 ± 0.014 |",
        "| CLEF activity (PA) | ✓ |  |  | 0.400 ± 0.014 | 0.300 ± 0.014 |",
        "| CLEF activity (PA) | ✓ | ✓ |  | 0.450 ± 0.014 | 0.350 ± 0.014 |",
        "| CLEF activity (PA) | ✓ | ✓ | ✓ | 0.460 ± 0.014 | 0.360 ± 0.014 |",
        "| CLEF activity (PA) | ✓ |  | ✓ | 0.430 ± 0.014 | 0.330 ± 0.014 |",
        "| EmoCo | ✓ |  |  | 0.350 ± 0.014 | 0.310 ± 0.014 |",
        "| EmoCo | ✓ | ✓ |  | 0.400 ± 0.014 | 0.500 ± 0.014 |",
        "| EmoCo | ✓ | ✓ | ✓ | 0.410 ± 0.014 | 0.410 ± 0.014 |",
        "| EmoCo | ✓ |  | ✓ | 0.380 ± 0.014 | 0.330 ± 0.014 |",
        "| CL-ILE (pre-training: none) | — | — | — | 0.380 ± 0.014 | — |",
        "| trivial: all AUs present | — | — | — | 0.250 ± 0.000 | — |",
        "| trivial: majority class | — | — | — | — | 0.125 ± 0.000 |",
    ]


def test_format_table_states_a_step_cap_and_marks_rows_with_missing_seeds():
    options = quick_options(StudyOptions(finetuning_epochs=10, seeds=(0, 1), pretraining_variants=("none",), components=("I",),
                                         tasks=("au",), include_cl_ile=False))
    records = records_of(options) + records_of(replace(options, seeds=(1,), components=("IN",)))
    table = format_table(summarize(records))
    assert table.splitlines()[0] == ("Table 6 on synthfaces, test subjects (epochs and AU thresholds chosen on "
                                     "validation subjects): mean ± std over seeds 0, 1. Same budget for every method: "
                                     "4 stage-0 steps (image-caption loss, other subjects) for every start and 10 "
                                     "fine-tuning epochs, each run capped at 4 optimizer steps.")
    without_stage0 = [record for record in records if record["kind"] != "stage0"]
    assert format_table(summarize(without_stage0)).splitlines()[0].endswith(
        "Same budget for every method: 10 fine-tuning epochs, each run capped at 4 optimizer steps.")
    assert "| none | ✓ |  |  | 0.290 ± 0.000 (n=1) | — |" in table
    assert "| none | ✓ | ✓ |  | 0.360 ± 0.000 (n=1) | — |" in table


def test_ordering_checks_test_table_6_claims_on_the_means():
    checks = ordering_checks(summarize(records_of(StudyOptions(finetuning_epochs=10, seeds=(0, 1)))))
    outcome = [(check["task"], check["claim"], check["holds"]) for check in checks]
    text_claims = []
    for variant, name in [("none", "none"), ("self_supervised", "self-supervised"),
                          ("image_activity", "CLEF activity (PA)"), ("emoco", "EmoCo")]:
        for task in ("au", "expression"):
            text_claims += [
                (task, f"pre-training {name}: a text encoder (IN, IND) beats image-only I",
                 not (variant == "self_supervised" and task == "expression")),
                (task, f"pre-training {name}: descriptions help, IND >= IN",
                 not (variant == "emoco" and task == "expression")),
            ]
    assert outcome == text_claims + [
        ("au", "CLEF activity (PA) pre-training with IND is the best row", True),
        ("expression", "CLEF activity (PA) pre-training with IND is the best row", False),
    ] + [(task, f"{components}: CLEF activity (PA) pre-training beats none",
          not (task == "expression" and components == "ID"))
         for task in ("au", "expression") for components in ("I", "IN", "IND", "ID")]
    best_expression = checks[len(text_claims) + 1]
    assert best_expression["values"] == pytest.approx({"CLEF activity (PA) IND": 0.36, "best other: EmoCo IN": 0.50})
    assert checks[len(text_claims)]["values"] == pytest.approx(
        {"CLEF activity (PA) IND": 0.46, "best other: CLEF activity (PA) IN": 0.45})
    assert checks[4]["values"] == pytest.approx({"I": 0.32, "IN": 0.37, "IND": 0.38})  # self-supervised, au
    assert checks[-1]["values"] == pytest.approx({"CLEF activity (PA)": 0.33, "none": 0.34})  # ID, expression


def test_ordering_checks_catch_a_text_encoder_that_does_not_help_and_cl_ile_beating_clef():
    records = records_of(StudyOptions(finetuning_epochs=10, seeds=(0,), pretraining_variants=("none", "image_activity")))
    records = [{**record, "value": 0.9} if record.get("method") == CL_ILE else record for record in records]
    records = [{**record, "value": 0.1} if (record.get("method"), record.get("pretraining"), record.get("task")) ==
               ("IND", "none", "au") else record for record in records]
    checks = {(check["task"], check["claim"]): check for check in ordering_checks(summarize(records))}
    best = checks[("au", "CLEF activity (PA) pre-training with IND is the best row")]
    assert not best["holds"] and best["values"]["best other: CL-ILE"] == pytest.approx(0.9)
    assert not checks[("au", "pre-training none: a text encoder (IN, IND) beats image-only I")]["holds"]
    assert not checks[("au", "pre-training none: descriptions help, IND >= IN")]["holds"]
    assert checks[("au", "IND: CLEF activity (PA) pre-training beats none")]["holds"]


def test_checks_leave_out_claims_whose_rows_were_not_run():
    summary = summarize(records_of(StudyOptions(finetuning_epochs=10, seeds=(0,), pretraining_variants=("emoco",), components=("IND",),
                                                tasks=("expression",))))
    assert ordering_checks(summary) == []
    assert format_checks([]) == ""
    assert "orderings" not in format_report(summary, [])


def test_report_appends_the_checks_as_bullets():
    summary = summarize(records_of(StudyOptions(finetuning_epochs=10, seeds=(0, 1), pretraining_variants=("none", "image_activity"),
                                                components=("I", "IND"), tasks=("au",), include_cl_ile=False)))
    report = format_report(summary, ordering_checks(summary))
    assert report.startswith(format_table(summary))
    assert report.endswith(
        "\nThe orderings of the paper's Table 6, on these means, and on how many seeds each holds when the runs of "
        "a seed are compared with each other:\n\n"
        "- **holds** (au): pre-training none: a text encoder (IND) beats image-only I (I 0.300, IND 0.360; on 2 of 2 "
        "seeds)\n"
        "- **holds** (au): pre-training CLEF activity (PA): a text encoder (IND) beats image-only I "
        "(I 0.400, IND 0.460; on 2 of 2 seeds)\n"
        "- **holds** (au): CLEF activity (PA) pre-training with IND is the best row "
        "(CLEF activity (PA) IND 0.460, best other: CLEF activity (PA) I 0.400; on 2 of 2 seeds)\n"
        "- **holds** (au): I: CLEF activity (PA) pre-training beats none (CLEF activity (PA) 0.400, none 0.300; on 2 "
        "of 2 seeds)\n"
        "- **holds** (au): IND: CLEF activity (PA) pre-training beats none (CLEF activity (PA) 0.460, none 0.360; "
        "on 2 of 2 seeds)\n"
    )


def test_checks_count_the_seeds_on_which_a_claim_holds():
    """Seed 1's IND falls below its I: on the means IND still wins, but only on 1 of the 3 paired seeds."""
    records = records_of(StudyOptions(finetuning_epochs=10, seeds=(0, 1, 2), pretraining_variants=("none",),
                                      components=("I", "IND"), tasks=("au",), include_cl_ile=False))
    values = {0: 0.5, 1: 0.1, 2: 0.27}  # I is 0.300 on every seed
    records = [{**record, "value": values[record["seed"]]} if record.get("method") == "IND" else record
               for record in records]
    (check,) = ordering_checks(summarize(records))
    assert check["values"] == pytest.approx({"I": 0.3, "IND": 0.29})
    assert (check["holds"], check["seeds_holding"], check["num_seeds"]) == (False, 1, 3)
    records = [{**record, "value": 0.6} if (record.get("method"), record["seed"]) == ("IND", 1) else record
               for record in records]
    (check,) = ordering_checks(summarize(records))
    assert (check["holds"], check["seeds_holding"]) == (True, 2)
    assert format_checks([check]).endswith("(I 0.300, IND 0.457; on 2 of 3 seeds)\n")


# The study end to end: real pre-training and fine-tuning runs, tiny.


@pytest.mark.usefixtures("fresh_accelerator_state")
def test_a_tiny_study_runs_writes_its_table_and_resumes_without_retraining(tmp_path):
    from accelerate.state import AcceleratorState, GradientState

    options = quick_options(StudyOptions(output_dir=str(tmp_path), seeds=(0,), pretraining_variants=("none", "emoco"),
                                         components=("I",), tasks=("au",)))
    options = replace(options, max_steps=2, emoco_queue_size=8, workers=2)  # two worker processes train the runs
    summary = run_study(options)
    labels = [row["label"] for row in summary["rows"]]
    assert labels == ["none I", "EmoCo I", "CL-ILE", "trivial: all AUs present"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(record["kind"], record["name"]) for record in results["records"]] == [
        ("stage0", "stage0"), ("finetune", "finetune-none-I-au"), ("pretrain", "pretrain-emoco"),
        ("finetune", "finetune-emoco-I-au"), ("finetune", "finetune-none-cl_ile-au")]
    assert all(record["global_step"] == 2 for record in results["records"])
    assert summary["budget"]["stage0_steps"] == 2 and summary["stage0_model"] is None
    for record in [record for record in results["records"] if record["kind"] == "finetune"]:
        assert isinstance(record["value"], float) and isinstance(record["validation"], float)
    for name in ("finetune-none-I-au", "finetune-emoco-I-au"):  # picked on validation, tested once on test
        saved = json.loads((tmp_path / "seed0" / name / "all_results.json").read_text())
        assert (saved["eval_split"], saved["test_split"]) == ("validation", "test")
    assert "2 stage-0 steps" in (tmp_path / "table.md").read_text()
    assert "| EmoCo | ✓ |  |  |" in (tmp_path / "table.md").read_text()
    finished = {path: path.stat().st_mtime_ns for path in tmp_path.glob("seed0/*/all_results.json")}
    assert len(finished) == 3
    models = {path: path.stat().st_mtime_ns for path in tmp_path.glob("seed0/*/model/config.json")}
    assert {path.parent.parent.name for path in models} == {"stage0", "pretrain-emoco"}

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    assert run_study(replace(options, workers=1)) == summary  # everything read back here, nothing trained again
    assert {path: path.stat().st_mtime_ns for path in finished} == finished
    assert {path: path.stat().st_mtime_ns for path in models} == models
    assert all(record["cached"] for record in json.loads((tmp_path / "results.json").read_text())["records"])

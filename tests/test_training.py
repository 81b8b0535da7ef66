"""Tests of the training loops (clef_hf.training): real Accelerate runs of a tiny CLEF model on a small synthfaces
set saved to disk, the best-model folder, the Table 6 components, checkpoints and exact resumption."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from clef_hf import CLEFConfig, CLEFModel, CLEFProcessor
from clef_hf.training import FineTuningArguments, PretrainingArguments, finetune, pretrain
from clef_hf.training.checkpointing import checkpoint_dirs, resolve_checkpoint
from clef_hf.training.data import EpochSeededSampler, class_weights_from_split
from clef_hf.training.initialization import load_model_and_processor
from clef_hf.training.optimization import make_optimizer, make_scheduler, training_steps
from clef_hf.vocabulary import fill_template

from conftest import IMAGE_SIZE, PROJECTION_DIM

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


def finetune_args(output_dir, dataset, config_file, **overrides) -> FineTuningArguments:
    # tiny_faces has train and test splits only: the loop's tests select on test, knowingly, at the fixed threshold
    # (tests/test_model_selection.py covers the held-out selection).
    values = dict(output_dir=str(output_dir), dataset=dataset, config_file=config_file, task="au",
                  per_device_train_batch_size=16, per_device_eval_batch_size=32, num_train_epochs=2,
                  learning_rate=1e-3, report_to="none", logging_steps=1, seed=3,
                  eval_split="test", test_split="", select_au_threshold=False)
    values.update(overrides)
    return FineTuningArguments(**values)


def weights(directory) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(directory, "model.safetensors"))


# ---------------------------------------------------------------- fine-tuning


def test_finetune_keeps_the_best_epoch_as_a_loadable_hub_ready_folder(tmp_path, tiny_faces, tiny_config_file):
    args = finetune_args(tmp_path / "run", tiny_faces, tiny_config_file, num_train_epochs=3, report_to="tensorboard",
                         text_warmup_steps=3)
    results = finetune(args)

    history = results["history"]
    assert [entry["epoch"] for entry in history] == [0, 1, 2] and results["global_step"] == 12  # 64 images / 16
    best = max(history, key=lambda entry: entry["mean_f1"])
    assert results["best_epoch"] == best["epoch"] and results["best_metric"] == best["mean_f1"]
    assert len(best["f1"]) == 17 and math.isclose(best["mean_f1"], sum(best["f1"]) / 17)
    assert 0 <= results["baseline"]["mean_f1"] <= 1

    best_dir = tmp_path / "run" / "best"
    saved = json.loads((best_dir / "eval_results.json").read_text())
    assert saved["epoch"] == best["epoch"] and saved["mean_f1"] == best["mean_f1"]
    assert json.loads((best_dir / "training_args.json").read_text())["learning_rate"] == 1e-3
    model = CLEFModel.from_pretrained(best_dir).eval()
    processor = CLEFProcessor.from_pretrained(best_dir)
    assert model.config.task == "au" and model.config.label_ids[:2] == ["AU1", "AU2"]
    train = __import__("datasets").load_from_disk(tiny_faces)["train"]
    assert model.config.class_weights == pytest.approx(class_weights_from_split(train, "au", 17))
    # The stored label embeddings are the name embeddings of the saved text encoder.
    stored = model.label_embeddings.clone()
    assert torch.allclose(model.update_label_embeddings(processor), stored, atol=1e-6)
    # The saved model reproduces the evaluated F1 through the standard processor and forward.
    test = __import__("datasets").load_from_disk(tiny_faces)["test"]
    with torch.no_grad():
        logits = model(**processor(images=[image.convert("RGB") for image in test["image"]], return_tensors="pt")).logits
    predicted = (torch.sigmoid(logits) > model.config.au_threshold).long()
    truth = torch.tensor(list(test["au"]))
    tp = ((predicted == 1) & (truth == 1)).sum(0).float()
    f1 = 2 * tp / (predicted.sum(0) + (truth == 1).sum(0)).clamp(min=1)
    assert f1.mean().item() == pytest.approx(best["mean_f1"], abs=1e-6)

    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "train/loss" in line] == list(range(1, 13))
    assert sum("eval/mean_f1" in line for line in lines) == 3
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event file"


def test_expression_finetuning_reports_accuracy_and_confusion(tmp_path, tiny_faces, tiny_config_file):
    results = finetune(finetune_args(tmp_path, tiny_faces, tiny_config_file, task="expression", num_train_epochs=1))
    best = results["best"]
    confusion = torch.tensor(best["confusion_matrix"])
    assert confusion.shape == (8, 8) and confusion.sum() == 32
    assert best["accuracy"] == pytest.approx(confusion.trace().item() / 32)
    assert results["baseline"]["majority_class"] in CLEFModel.from_pretrained(tmp_path / "best").config.label_ids


def test_image_only_component_trains_a_linear_head_and_leaves_the_text_encoder(tmp_path, tiny_faces, tiny_config_file):
    """Table 6's I: no text encoder; the head's normalised rows are saved as the label embeddings."""
    torch.manual_seed(0)
    results = finetune(finetune_args(tmp_path, tiny_faces, tiny_config_file, components="I", num_train_epochs=1))
    model = CLEFModel.from_pretrained(tmp_path / "best")
    state = load_file(str(checkpoint_dirs(str(tmp_path))[-1] + "/model.safetensors"))
    head = torch.nn.functional.normalize(state["label_head"], dim=-1)
    assert torch.allclose(model.label_embeddings, head, atol=1e-6)
    # The text encoder is the untouched initialisation: rebuilding the run's initial model gives the same weights.
    torch.manual_seed(3)  # the run's seed, set by accelerate's set_seed before the model is built
    initial, _ = load_model_and_processor(config_file=tiny_config_file, task="au",
                                          labels={k: getattr(model.config, k) for k in
                                                  ("label_ids", "label_names", "label_descriptions")})
    for name, parameter in initial.text_model.named_parameters():
        assert torch.equal(parameter, model.text_model.get_parameter(name)), name
    assert results["components"] == "I"


def test_label_names_component_differs_from_full_clef(tmp_path, tiny_faces, tiny_config_file):
    """IN ignores the descriptions (Eq. 4/5 only); IND adds Eq. 3 (Eq. 6): from the same start they diverge."""
    finetune(finetune_args(tmp_path / "in", tiny_faces, tiny_config_file, components="IN", max_steps=2))
    AcceleratorState._reset_state(True)
    finetune(finetune_args(tmp_path / "ind", tiny_faces, tiny_config_file, components="IND", max_steps=2))
    a, b = weights(tmp_path / "in" / "best"), weights(tmp_path / "ind" / "best")
    assert not torch.equal(a["text_projection.weight"], b["text_projection.weight"])


def test_descriptions_without_names_component_predicts_with_the_description_embeddings(tmp_path, tiny_faces,
                                                                                      tiny_config_file):
    """The poster's ID row: images meet the label descriptions; the saved model embeds descriptions, not names, and
    predicts with them after `from_pretrained`, and `update_label_embeddings` keeps doing so."""
    results = finetune(finetune_args(tmp_path, tiny_faces, tiny_config_file, components="ID", max_steps=2))
    assert results["components"] == "ID"
    model = CLEFModel.from_pretrained(tmp_path / "best").eval()
    assert model.config.label_text == "descriptions"
    processor = CLEFProcessor.from_pretrained(tmp_path / "best")
    config = model.config
    descriptions = model.encode_texts(processor.tokenizer, fill_template(config.description_templates[0],
                                                                        config.label_descriptions))
    names = model.encode_texts(processor.tokenizer, fill_template(config.name_template, config.label_names))
    assert torch.allclose(model.label_embeddings, descriptions, atol=1e-5)
    assert not torch.allclose(model.label_embeddings, names, atol=1e-3)
    stored = model.label_embeddings.clone()
    assert torch.allclose(model.update_label_embeddings(processor.tokenizer), stored, atol=1e-5)


def test_label_text_must_be_names_or_descriptions():
    with pytest.raises(ValueError, match="label_text"):
        CLEFConfig(label_text="captions")


def test_mixed_precision_gradient_accumulation_and_checkpointing_run(tmp_path, tiny_faces, tiny_config_file):
    results = finetune(finetune_args(tmp_path, tiny_faces, tiny_config_file, mixed_precision="bf16",
                                     gradient_accumulation_steps=2, gradient_checkpointing=True, num_train_epochs=1))
    assert results["global_step"] == 2  # 4 batches, 2 per optimizer step
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(line["train/loss"]) for line in lines if "train/loss" in line)


def test_max_steps_stops_inside_an_epoch_and_evaluates_there(tmp_path, tiny_faces, tiny_config_file):
    results = finetune(finetune_args(tmp_path, tiny_faces, tiny_config_file, max_steps=3, num_train_epochs=5))
    assert results["global_step"] == 3 and [entry["step"] for entry in results["history"]] == [3]


# ---------------------------------------------------------------- resumption


@pytest.mark.parametrize("objective", ["clef", "cl_ile"])
def test_resuming_mid_epoch_from_a_checkpoint_gives_the_uninterrupted_weights(
        tmp_path, tiny_faces, tiny_config_file, objective):
    """With gradient accumulation, resume from a checkpoint saved in the middle of the second epoch (for CL-ILE: in
    stage II, with the ID encoder and identity-label embeddings of stage I restored)."""
    common = dict(num_train_epochs=2, gradient_accumulation_steps=2, per_device_train_batch_size=8,
                  checkpointing_steps=3, checkpoints_total_limit=10, objective=objective)
    finetune(finetune_args(tmp_path / "full", tiny_faces, tiny_config_file, **common))  # 8 batches/epoch: 4 steps
    steps = [os.path.basename(path) for path in checkpoint_dirs(str(tmp_path / "full"))]
    assert steps == ["step-3", "step-6", "step-8"]

    # A second run that only has the step-6 checkpoint (epoch 1, batch 4 of 8) resumes from it.
    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    os.system(f"cp -r {tmp_path / 'full' / 'checkpoints' / 'step-6'} {resumed_dir}")
    # and the best model: epoch 0's, as the interrupted run left it, or epoch 1's, which the resumed run saves again
    os.system(f"cp -r {tmp_path / 'full' / 'best'} {tmp_path / 'resumed'}")
    assert json.loads((resumed_dir / "step-6" / "loop_state.json").read_text())["batches_done"] == 4
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    finetune(finetune_args(tmp_path / "resumed", tiny_faces, tiny_config_file, resume_from_checkpoint="latest", **common))
    full, resumed = weights(tmp_path / "full" / "checkpoints" / "step-8"), weights(resumed_dir / "step-8")
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name


def run_finetune_script(output_dir, dataset, config_file, extra=()) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "scripts" / "finetune.py"), "--output_dir", str(output_dir),
               "--dataset", dataset, "--config_file", config_file, "--task", "expression",
               "--per_device_train_batch_size", "4", "--num_train_epochs", "3", "--learning_rate", "1e-3",
               "--checkpointing_steps", "4", "--report_to", "none", "--seed", "5",
               "--eval_split", "test", "--test_split", "", *extra]  # tiny_faces has train and test splits only
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})


def test_killed_run_resumes_to_the_same_final_weights(tmp_path, tiny_faces, tiny_config_file):
    """SIGKILL a run after its first checkpoint; `--resume_from_checkpoint latest` ends with the weights of a run that
    was never interrupted."""
    uninterrupted = run_finetune_script(tmp_path / "a", tiny_faces, tiny_config_file)
    killed = run_finetune_script(tmp_path / "b", tiny_faces, tiny_config_file)
    deadline = time.time() + 300
    while not checkpoint_dirs(str(tmp_path / "b")):
        assert killed.poll() is None, "the run finished before it could be killed:\n" + killed.stdout.read()[-2000:]
        assert time.time() < deadline
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    at_kill = resolve_checkpoint(str(tmp_path / "b"), "latest")
    assert json.loads(Path(at_kill, "loop_state.json").read_text())["global_step"] < 48  # 64 images / 4 x 3 epochs
    resumed = run_finetune_script(tmp_path / "b", tiny_faces, tiny_config_file, ["--resume_from_checkpoint", "latest"])
    out_resumed, out_full = resumed.communicate(timeout=600)[0], uninterrupted.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out_resumed[-3000:]
    assert uninterrupted.returncode == 0, out_full[-3000:]
    assert "Resumed from" in out_resumed
    final_a, final_b = weights(tmp_path / "a" / "checkpoints" / "step-48"), weights(tmp_path / "b" / "checkpoints" / "step-48")
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name
    assert weights(tmp_path / "a" / "best").keys() == weights(tmp_path / "b" / "best").keys()
    results_a = json.loads((tmp_path / "a" / "all_results.json").read_text())
    results_b = json.loads((tmp_path / "b" / "all_results.json").read_text())
    assert results_a["history"] == results_b["history"]


def test_latest_ignores_a_checkpoint_whose_save_did_not_finish(tmp_path):
    (tmp_path / "checkpoints" / "step-4").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-4" / "loop_state.json").write_text("{}")
    (tmp_path / "checkpoints" / ".tmp-step-8").mkdir()  # a crash mid-save leaves only a temporary folder
    (tmp_path / "checkpoints" / "step-9").mkdir()  # no loop state: incomplete
    assert resolve_checkpoint(str(tmp_path), "latest") == str(tmp_path / "checkpoints" / "step-4")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_checkpoint(str(tmp_path), str(tmp_path / "checkpoints" / "step-9"))
    assert resolve_checkpoint(str(tmp_path / "elsewhere"), "latest") is None


# ---------------------------------------------------------------- pre-training


@pytest.mark.parametrize("losses", ["image_activity", "image", "self_supervised", "emoco"])
def test_pretraining_runs_and_its_model_fine_tunes(tmp_path, tiny_faces, tiny_config_file, losses):
    result = pretrain(PretrainingArguments(
        output_dir=str(tmp_path / "pre"), dataset=tiny_faces, config_file=tiny_config_file, pretraining_losses=losses,
        per_device_train_batch_size=16, max_steps=3, report_to="none", logging_steps=1, seed=1,
    ))
    assert result["global_step"] == 3 and math.isfinite(result["train_loss"])
    pre = CLEFModel.from_pretrained(result["model_dir"])
    assert pre.config.task is None
    # The fixed ε of Eq. 1-2 is used, so the learnable temperature is untouched.
    assert pre.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    AcceleratorState._reset_state(True)
    results = finetune(finetune_args(tmp_path / "ft", tiny_faces, None, model_name_or_path=result["model_dir"],
                                     max_steps=2))
    tuned = CLEFModel.from_pretrained(results["best_model_dir"])
    assert tuned.config.task == "au" and tuned.label_embeddings.shape == (17, PROJECTION_DIM)
    # Fine-tuning started from the pre-trained weights: after 2 small steps they are still close, not a fresh init.
    before, after = pre.vision_model.embeddings.patch_embedding.weight, tuned.vision_model.embeddings.patch_embedding.weight
    assert (after - before).abs().max() < 0.05


def test_image_only_pretraining_leaves_the_text_encoder(tmp_path, tiny_faces, tiny_config_file):
    for losses in ("image", "image_activity"):
        AcceleratorState._reset_state(True)
        pretrain(PretrainingArguments(
            output_dir=str(tmp_path / losses), dataset=tiny_faces, config_file=tiny_config_file,
            pretraining_losses=losses, per_device_train_batch_size=16, max_steps=2, report_to="none", seed=1,
        ))
    image_only, with_text = weights(tmp_path / "image" / "model"), weights(tmp_path / "image_activity" / "model")
    torch.manual_seed(1)  # the runs' seed: the same initial weights
    fresh, _ = load_model_and_processor(config_file=tiny_config_file)
    text_key = "text_projection.weight"
    assert not torch.equal(image_only[text_key], with_text[text_key])
    assert torch.equal(image_only[text_key], fresh.state_dict()[text_key])


def test_self_supervised_pretraining_needs_no_activities_and_differs_from_activity_positives(
        tmp_path, tiny_faces, tiny_config_file):
    """SimCLR-style pre-training runs on images alone (an expression or unlabelled data set); with activities as
    positives (PI) the same seed, data and views give other weights, so the labels really changed."""
    splits = datasets.load_from_disk(tiny_faces)
    no_labels = str(tmp_path / "images-only")
    splits.select_columns(["image"]).save_to_disk(no_labels)
    runs = {}
    for losses, dataset in (("self_supervised", no_labels), ("image", tiny_faces)):
        AcceleratorState._reset_state(True)
        result = pretrain(PretrainingArguments(
            output_dir=str(tmp_path / losses), dataset=dataset, config_file=tiny_config_file,
            pretraining_losses=losses, per_device_train_batch_size=16, max_steps=2, report_to="none", seed=1,
        ))
        assert math.isfinite(result["train_loss"])
        runs[losses] = weights(tmp_path / losses / "model")
    key = "vision_model.embeddings.patch_embedding.weight"
    assert not torch.equal(runs["self_supervised"][key], runs["image"][key])
    AcceleratorState._reset_state(True)
    with pytest.raises(ValueError, match="activity"):  # activity positives do need the activity column
        pretrain(PretrainingArguments(output_dir=str(tmp_path / "needs"), dataset=no_labels,
                                      config_file=tiny_config_file, pretraining_losses="image", max_steps=1,
                                      report_to="none"))


# ---------------------------------------------------------------- pieces


def test_class_weights_are_normalised_inverse_frequencies(tiny_faces):
    import datasets

    table = datasets.Dataset.from_dict({"au": [[1, 0, -1], [1, 1, -1], [0, 0, 1], [1, -1, -1]],
                                        "expression": [0, 0, 0, 1]})
    weights_au = class_weights_from_split(table, "au", 3)
    # rates: AU a 3/4, AU b 1/3 (one unknown), AU c 1/1 (three unknown)
    raw = [4 / 3, 3, 1]
    assert weights_au == pytest.approx([w * 3 / sum(raw) for w in raw])
    weights_expression = class_weights_from_split(table, "expression", 3)  # class 2 never occurs: counted once
    raw = [4 / 3, 4, 4]
    assert weights_expression == pytest.approx([w * 3 / sum(raw) for w in raw])
    with pytest.raises(ValueError, match="outside"):
        class_weights_from_split(table, "expression", 1)


def test_sampler_order_depends_only_on_seed_and_epoch():
    a, b = EpochSeededSampler(10, seed=1), EpochSeededSampler(10, seed=1)
    b.use_epoch(0)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.use_epoch(1)
    assert list(a) != list(b)


def test_schedule_warms_up_then_decays_to_the_floor(tmp_path):
    args = finetune_args(tmp_path, "synthfaces", "x.json", num_train_epochs=4, warmup_epochs=1, learning_rate=1e-3,
                         min_learning_rate=1e-5)
    updates_per_epoch, total, warmup = training_steps(args, batches_per_epoch=10)
    assert (updates_per_epoch, total, warmup) == (10, 40, 10)
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, args)
    scheduler = make_scheduler(optimizer, args, total, warmup)
    rates = []
    for _ in range(total):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0 and rates[5] == pytest.approx(5e-4) and max(rates) == pytest.approx(1e-3)
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-5)


def test_fused_adamw_is_off_by_default_and_matches_the_loop_to_rounding(tmp_path):
    def seeded_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))

    def flat(model: torch.nn.Module) -> torch.Tensor:
        return torch.cat([parameter.detach().flatten() for parameter in model.parameters()])

    weights = {}
    for fused in (False, True):
        model = seeded_model()
        args = finetune_args(tmp_path, "synthfaces", "x.json", learning_rate=1e-2, weight_decay=0.05,
                             **({"fused_adamw": True} if fused else {}))
        optimizer = make_optimizer(model, args)
        assert bool(optimizer.defaults.get("fused")) is fused
        inputs, targets = torch.randn(16, 8), torch.randint(0, 3, (16,))
        for _ in range(5):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
        weights[fused] = flat(model)
    assert not torch.allclose(weights[False], flat(seeded_model()))  # the steps moved the weights
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-5, atol=1e-6)


def test_arguments_default_to_the_papers_learning_rates_and_name_bad_values(tmp_path):
    assert finetune_args(tmp_path, "disfa", "x.json", learning_rate=None).learning_rate == 1e-4
    assert finetune_args(tmp_path, "bp4d", "x.json", learning_rate=None).learning_rate == 2e-4
    assert finetune_args(tmp_path, "ferplus", "x.json", learning_rate=None).learning_rate == 1e-4
    pre = PretrainingArguments(output_dir=str(tmp_path), config_file="x.json")
    assert (pre.per_device_train_batch_size, pre.weight_decay, pre.num_train_epochs, pre.warmup_epochs,
            pre.min_learning_rate) == (64, 0.01, 5, 1, 1e-6)
    with pytest.raises(ValueError, match="components"):
        finetune_args(tmp_path, "bp4d", "x.json", components="IX")
    with pytest.raises(ValueError, match="exactly one"):
        FineTuningArguments(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="dataset_options"):
        finetune_args(tmp_path, "bp4d", "x.json", dataset_options="{bad")
    with pytest.raises(ValueError, match="max_rotation"):
        finetune_args(tmp_path, "bp4d", "x.json", max_rotation_degrees=-1)


def test_a_split_without_the_task_column_is_named(tmp_path, tiny_faces, tiny_config_file):
    with pytest.raises(ValueError, match="'nope' is not a split"):
        finetune(finetune_args(tmp_path, tiny_faces, tiny_config_file, eval_split="nope"))


def test_initialising_from_a_clip_checkpoint_folder(tmp_path, tiny_clip, tokenizer):
    from transformers import CLIPImageProcessorPil

    tiny_clip.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                          crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(tmp_path)
    from clef_hf.vocabulary import au_labels

    model, processor = load_model_and_processor(str(tmp_path), task="au", labels=au_labels([1, 2]))
    pixel_values = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        expected = tiny_clip.get_image_features(pixel_values).pooler_output
        assert torch.equal(model.get_image_features(pixel_values), expected)
    assert model.config.label_ids == ["AU1", "AU2"] and len(processor.tokenizer) == len(tokenizer)


@pytest.mark.parametrize("losses", ["image_activity", "emoco", "image_text"])
def test_pretraining_resumes_mid_epoch_to_the_uninterrupted_weights(tmp_path, tiny_faces, tiny_config_file, losses):
    """For EmoCo the momentum encoder and the queues are part of the training state: the keys stored before the
    checkpoint are the next steps' negatives, so a resumed run without them would train other weights. For stage 0
    (image_text) the learnable temperature and its optimizer state are."""
    emoco = dict(emoco_queue_size=16, emoco_momentum=0.5) if losses == "emoco" else {}

    def run(output_dir, **extra):
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        return pretrain(PretrainingArguments(
            output_dir=str(output_dir), dataset=tiny_faces, config_file=tiny_config_file, per_device_train_batch_size=8,
            max_steps=5, checkpointing_steps=2, checkpoints_total_limit=5, report_to="none", seed=6,
            learning_rate=1e-3, pretraining_losses=losses, **emoco, **extra,
        ))

    run(tmp_path / "full")
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    os.system(f"cp -r {tmp_path / 'full' / 'checkpoints' / 'step-2'} {tmp_path / 'resumed' / 'checkpoints'}")
    result = run(tmp_path / "resumed", resume_from_checkpoint="latest")
    assert result["global_step"] == 5
    full, resumed = weights(tmp_path / "full" / "model"), weights(tmp_path / "resumed" / "model")
    for name in full:
        assert torch.equal(full[name], resumed[name]), name

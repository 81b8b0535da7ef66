"""Tests of the field's other recipes in CLEF's loops: EmoCo pre-training (`--pretraining_losses emoco`) and CL-ILE
fine-tuning (`--objective cl_ile`). Real Accelerate runs of a tiny CLEF model on a small synthfaces set on disk; the
training states that Accelerate writes are read back to see what each stage changed."""

import math
import os

import datasets
import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from clef_hf import CLEFModel, CLEFProcessor
from clef_hf.training import FineTuningArguments, PretrainingArguments, finetune, pretrain
from clef_hf.training.data import FacialBehaviorCollator
from clef_hf.training.initialization import load_model_and_processor
from clef_hf.training.optimization import make_optimizer, make_scheduler

os.environ["HF_HUB_OFFLINE"] = "1"

pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")

SEED = 4


def state(checkpoint_dir) -> dict[str, torch.Tensor]:
    """The trained module's tensors in an Accelerate checkpoint (parameters and buffers)."""
    return load_file(os.path.join(checkpoint_dir, "model.safetensors"))


def fresh_model(config_file: str) -> CLEFModel:
    """The initial weights of a run with seed `SEED` (the loops seed before building the model)."""
    torch.manual_seed(SEED)
    return load_model_and_processor(config_file=config_file)[0]


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}


# ---------------------------------------------------------------- EmoCo


def emoco_args(output_dir, dataset, config_file, **overrides) -> PretrainingArguments:
    values = dict(output_dir=str(output_dir), dataset=dataset, config_file=config_file, pretraining_losses="emoco",
                  per_device_train_batch_size=16, max_steps=3, checkpointing_steps=3, report_to="none", seed=SEED,
                  learning_rate=1e-3, emoco_queue_size=4, emoco_momentum=0.0)
    values.update(overrides)
    return PretrainingArguments(**values)


def test_emoco_fills_one_queue_per_emotion_and_moves_the_momentum_encoder(tmp_path, tiny_faces, tiny_config_file):
    result = pretrain(emoco_args(tmp_path, tiny_faces, tiny_config_file))
    assert result["global_step"] == 3 and math.isfinite(result["train_loss"])
    trained = state(tmp_path / "checkpoints" / "step-3")

    # The 48 images of the 3 steps (the sampler's order for seed 4, epoch 0) went into the queue of their emotion,
    # each queue keeping at most its 4 newest keys.
    split = datasets.load_from_disk(tiny_faces)["train"]
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(SEED * 100_003)).tolist()[:48]
    seen = torch.tensor([split[index]["expression"] for index in order])
    num_emotions = split.features["expression"].num_classes
    expected = torch.bincount(seen, minlength=num_emotions).clamp(max=4)
    assert torch.equal(trained["queue.filled_slots"], expected)
    keys = trained["queue.keys"]  # (emotions, 4, 128), normalised where filled
    filled = torch.arange(4)[None, :] < expected[:, None]
    assert torch.allclose(keys[filled].norm(dim=-1), torch.ones(int(expected.sum())))
    assert torch.equal(keys[~filled], torch.zeros_like(keys[~filled]))

    # m = 0: after each update the momentum encoder is a copy of the online encoder and head (Eq. 3).
    momentum = with_prefix(trained, "momentum_encoder.")
    online = {**with_prefix(trained, "model."), **{f"head.{k}": v for k, v in with_prefix(trained, "head.").items()}}
    assert momentum.keys() <= online.keys() and len(momentum) > 10
    for name, value in momentum.items():
        assert torch.equal(value, online[name]), name
    initial = fresh_model(tiny_config_file).state_dict()
    assert not torch.equal(momentum["vision_model.embeddings.patch_embedding.weight"],
                           initial["vision_model.embeddings.patch_embedding.weight"])

    # Only the image side trained; the saved model is a plain CLEF model without EmoCo's parts.
    saved = load_file(os.path.join(result["model_dir"], "model.safetensors"))
    assert not any(name.startswith(("momentum_encoder", "queue", "head", "classifier")) for name in saved)
    assert torch.equal(saved["text_projection.weight"], initial["text_projection.weight"])
    assert torch.equal(saved["visual_projection.weight"], trained["model.visual_projection.weight"])


def test_emoco_momentum_keeps_the_key_encoder_between_its_start_and_the_online_encoder(
        tmp_path, tiny_faces, tiny_config_file):
    pretrain(emoco_args(tmp_path, tiny_faces, tiny_config_file, max_steps=1, checkpointing_steps=1, emoco_momentum=0.75,
                        warmup_epochs=0))
    trained = state(tmp_path / "checkpoints" / "step-1")
    name = "vision_model.embeddings.patch_embedding.weight"
    start = fresh_model(tiny_config_file).state_dict()[name]
    online, momentum = trained[f"model.{name}"], trained[f"momentum_encoder.{name}"]
    assert torch.allclose(momentum, 0.75 * start + 0.25 * online, atol=1e-7)  # Eq. 3, once
    assert not torch.equal(momentum, online)


def test_emoco_labels_steer_the_training(tmp_path, tiny_faces, tiny_config_file):
    """The same images, views and seed with the expressions permuted give other weights: the labels are used."""
    splits = datasets.load_from_disk(tiny_faces)
    labels = splits["train"]["expression"]
    shifted = splits["train"].remove_columns("expression").add_column(
        "expression", [(label + 1) % 8 for label in labels], feature=splits["train"].features["expression"])
    datasets.DatasetDict({"train": shifted}).save_to_disk(str(tmp_path / "shifted"))
    runs = {}
    for name, dataset in (("original", tiny_faces), ("shifted", str(tmp_path / "shifted"))):
        AcceleratorState._reset_state(True)
        runs[name] = load_file(os.path.join(pretrain(emoco_args(
            tmp_path / name, dataset, tiny_config_file, max_steps=2))["model_dir"], "model.safetensors"))
    key = "vision_model.embeddings.patch_embedding.weight"
    assert not torch.equal(runs["original"][key], runs["shifted"][key])


def test_emoco_names_a_missing_or_bad_expression_column(tmp_path, tiny_faces, tiny_config_file):
    splits = datasets.load_from_disk(tiny_faces)
    splits.select_columns(["image", "activity", "activity_description"]).save_to_disk(str(tmp_path / "no-expr"))
    with pytest.raises(ValueError, match=r"no column \['expression'\]"):
        pretrain(emoco_args(tmp_path / "a", str(tmp_path / "no-expr"), tiny_config_file))
    unlabelled = splits["train"].cast_column("expression", datasets.Value("int64")).map(
        lambda row, index: {"expression": -1 if index == 5 else row["expression"]}, with_indices=True)
    unlabelled = unlabelled.cast_column("expression", splits["train"].features["expression"])
    datasets.DatasetDict({"train": unlabelled}).save_to_disk(str(tmp_path / "unlabelled"))
    with pytest.raises(ValueError, match=r"labels \[-1\] outside 0\.\.7"):
        pretrain(emoco_args(tmp_path / "c", str(tmp_path / "unlabelled"), tiny_config_file))
    with pytest.raises(ValueError, match="emoco_momentum"):
        emoco_args(tmp_path / "b", tiny_faces, tiny_config_file, emoco_momentum=1.0)
    with pytest.raises(ValueError, match="emoco_queue_size"):
        emoco_args(tmp_path / "b", tiny_faces, tiny_config_file, emoco_queue_size=0)


# ---------------------------------------------------------------- CL-ILE


def cl_ile_args(output_dir, dataset, config_file, **overrides) -> FineTuningArguments:
    values = dict(output_dir=str(output_dir), dataset=dataset, config_file=config_file, task="au",
                  objective="cl_ile", per_device_train_batch_size=16, per_device_eval_batch_size=32,
                  num_train_epochs=2, learning_rate=1e-3, report_to="none", logging_steps=1, seed=SEED,
                  checkpointing_steps=4, checkpoints_total_limit=5,
                  eval_split="test", test_split="", select_au_threshold=False)  # tiny_faces has train and test splits only
    values.update(overrides)
    return FineTuningArguments(**values)


def test_cl_ile_stage_one_trains_the_id_side_and_stage_two_the_general_side(tmp_path, tiny_faces, tiny_config_file):
    """64 training images in batches of 16: 8 steps, stage I for steps 1-4 and stage II for 5-8."""
    results = finetune(cl_ile_args(tmp_path, tiny_faces, tiny_config_file))
    assert results["objective"] == "cl_ile" and results["global_step"] == 8
    boundary, end = state(tmp_path / "checkpoints" / "step-4"), state(tmp_path / "checkpoints" / "step-8")
    initial = fresh_model(tiny_config_file).state_dict()
    vision = [name for name in initial if name.startswith(("vision_model.", "visual_projection."))]

    # Stage I: the ID encoder (a copy of the initial vision side) and the ILEs (one set per training subject) learn;
    # the general encoder and the AU embeddings do not move.
    assert boundary["identity_label_embeddings"].shape == (4, 17, initial["visual_projection.weight"].shape[0])
    assert not torch.equal(boundary["identity_encoder.vision_model.embeddings.patch_embedding.weight"],
                           initial["vision_model.embeddings.patch_embedding.weight"])
    for name in vision:
        assert torch.equal(boundary[f"model.{name}"], initial[name]), name

    # Stage II: the ID encoder and ILEs are frozen; the general encoder and the AU embeddings learn.
    for name in boundary:
        if name.startswith(("identity_encoder.", "identity_label_embeddings")):
            assert torch.equal(boundary[name], end[name]), name
    assert not torch.equal(boundary["au_embeddings"], end["au_embeddings"])
    assert not torch.equal(boundary["model.vision_model.embeddings.patch_embedding.weight"],
                           end["model.vision_model.embeddings.patch_embedding.weight"])
    # CL-ILE has no text side.
    assert torch.equal(end["model.text_projection.weight"], initial["text_projection.weight"])

    # Evaluation starts with stage II: the epoch that ended stage I is not a candidate for the best model.
    assert [entry["step"] for entry in results["history"]] == [8]


def test_cl_ile_orthogonality_floor_reaches_eq_4(tmp_path, tiny_faces, tiny_config_file):
    """A floor above every |cos| makes Eq. 4 constant, so stage II trains exactly as without it (weight 0); the
    default floor does not."""
    from accelerate.state import AcceleratorState, GradientState

    runs = {"floor": {"cl_ile_orthogonality_floor": 0.999}, "no-eq4": {"cl_ile_orthogonality_weight": 0.0},
            "default": {}}
    ends = {}
    for name, overrides in runs.items():
        finetune(cl_ile_args(tmp_path / name, tiny_faces, tiny_config_file, **overrides))
        ends[name] = state(tmp_path / name / "checkpoints" / "step-8")
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    for key in ends["floor"]:
        assert torch.equal(ends["floor"][key], ends["no-eq4"][key]), key
    assert not torch.equal(ends["default"]["au_embeddings"], ends["no-eq4"]["au_embeddings"])


def test_cl_ile_checkpoint_is_a_clef_model_with_cl_ile_decisions(tmp_path, tiny_faces, tiny_config_file):
    """The best folder is an ordinary CLEF model whose label embeddings are the normalised AU embeddings; its AU
    decisions σ(cos/τ) > 0.5 are CL-ILE's σ(F^G · AU) > 0.5, and evaluating it gives the loop's F1."""
    results = finetune(cl_ile_args(tmp_path, tiny_faces, tiny_config_file))
    model = CLEFModel.from_pretrained(results["best_model_dir"]).eval()
    processor = CLEFProcessor.from_pretrained(results["best_model_dir"])
    trained = state(tmp_path / "checkpoints" / "step-8")
    au_embeddings = torch.nn.functional.normalize(trained["au_embeddings"], dim=-1)
    assert torch.allclose(model.label_embeddings, au_embeddings)
    test = datasets.load_from_disk(tiny_faces)["test"]
    batch = FacialBehaviorCollator(processor.image_processor, ("au",))([test[i] for i in range(32)])
    with torch.no_grad():
        features = model.get_image_features(batch["pixel_values"])
        clef_decisions = torch.sigmoid(model(pixel_values=batch["pixel_values"]).logits) > 0.5
    cl_ile_decisions = torch.sigmoid(features @ au_embeddings.T) > 0.5
    assert torch.equal(clef_decisions, cl_ile_decisions)
    assert 0 < clef_decisions.float().mean() < 1  # not a degenerate all-or-nothing predictor

    # The pipeline (registered by importing clef_hf) takes the folder as it is and makes the same decisions.
    from transformers import pipeline

    faces = pipeline("facial-behavior", model=results["best_model_dir"])([test[i]["image"] for i in range(4)],
                                                                         detect_faces=False)
    for index, face in enumerate(faces):
        presence = {prediction["label"]: prediction["present"] for prediction in face[0]["predictions"]}
        assert presence == dict(zip(model.config.label_ids, cl_ile_decisions[index].tolist()))


def test_cl_ile_needs_subjects_and_au_labels(tmp_path, tiny_faces, tiny_config_file):
    splits = datasets.load_from_disk(tiny_faces)
    splits.remove_columns("subject").save_to_disk(str(tmp_path / "no-subject"))
    with pytest.raises(ValueError, match=r"no column \['subject'\]"):
        finetune(cl_ile_args(tmp_path / "a", str(tmp_path / "no-subject"), tiny_config_file))
    with pytest.raises(ValueError, match="cl_ile detects AUs"):
        cl_ile_args(tmp_path / "b", tiny_faces, tiny_config_file, task="expression")
    with pytest.raises(ValueError, match="cl_ile_stage_one_fraction"):
        cl_ile_args(tmp_path / "b", tiny_faces, tiny_config_file, cl_ile_stage_one_fraction=1.0)
    with pytest.raises(ValueError, match="at least 2 optimizer steps"):
        finetune(cl_ile_args(tmp_path / "c", tiny_faces, tiny_config_file, max_steps=1))


def test_layer_decay_slows_the_image_layers_near_the_pixels_and_leaves_the_rest(tmp_path, tiny_config_file):
    model = fresh_model(tiny_config_file)
    depth = model.config.vision_config.num_hidden_layers
    rates = {}
    for decay in (1.0, 0.5):
        args = finetune_like_args(tmp_path, tiny_config_file, layer_decay=decay)
        optimizer = make_optimizer(model, args)
        rates[decay] = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    by_name = dict(model.named_parameters())

    def rate(decay, name):
        return rates[decay][id(by_name[name])]

    patch = "vision_model.embeddings.patch_embedding.weight"
    first, last = (f"vision_model.encoder.layers.{i}.mlp.fc1.weight" for i in (0, depth - 1))
    assert {rate(1.0, name) for name in (patch, first, last)} == {1e-3}
    assert rate(0.5, patch) == pytest.approx(1e-3 * 0.5 ** (depth + 1))
    assert rate(0.5, first) == pytest.approx(1e-3 * 0.5 ** depth)
    assert rate(0.5, last) == pytest.approx(1e-3 * 0.5)
    for unchanged in ("visual_projection.weight", "vision_model.post_layernorm.weight",
                      "text_model.encoder.layers.0.mlp.fc1.weight"):
        assert rate(0.5, unchanged) == rate(1.0, unchanged) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="--layer_decay must be in"):
        finetune_like_args(tmp_path, tiny_config_file, layer_decay=0.0)


def finetune_like_args(tmp_path, config_file, **overrides) -> FineTuningArguments:
    return FineTuningArguments(output_dir=str(tmp_path), dataset="synthfaces", config_file=config_file, task="au",
                               learning_rate=1e-3, text_learning_rate_factor=1.0, **overrides)


def test_a_staged_schedule_warms_up_and_decays_once_per_stage(tmp_path):
    args = cl_ile_args(tmp_path, "synthfaces", "x.json", learning_rate=1e-3, min_learning_rate=1e-5)
    optimizer = make_optimizer(torch.nn.Linear(2, 2), args)
    scheduler = make_scheduler(optimizer, args, total=10, warmup=2, stages=(4, 6))
    rates = []
    for _ in range(11):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:4] == pytest.approx([0, 5e-4, 1e-3, 1e-5 + (1e-3 - 1e-5) * 0.5])  # stage I: 2 warm-up steps, decay
    assert rates[4:7] == pytest.approx([0, 5e-4, 1e-3])  # stage II starts again
    assert rates[10] == pytest.approx(1e-5) and rates[9] > rates[10]
    with pytest.raises(ValueError, match="summing to 10"):
        make_scheduler(optimizer, args, total=10, warmup=2, stages=(4, 5))


def test_the_collator_maps_category_columns_and_names_unknown_values(tiny_faces, tiny_config_file):
    _, processor = load_model_and_processor(config_file=tiny_config_file)
    rows = [datasets.load_from_disk(tiny_faces)["train"][i] for i in (0, 40)]
    subjects = sorted({row["subject"] for row in rows}) + ["S999"]
    batch = FacialBehaviorCollator(processor.image_processor, ("subject",), {"subject": subjects})(rows)
    assert batch["subject"].tolist() == [subjects.index(row["subject"]) for row in rows]
    with pytest.raises(ValueError, match=r"subject \['S001'\] is not among"):
        FacialBehaviorCollator(processor.image_processor, ("subject",), {"subject": ["S999"]})(rows[:1])


def test_the_methods_flags_default_to_their_papers_values(tmp_path):
    emoco = PretrainingArguments(output_dir=str(tmp_path), config_file="x.json", pretraining_losses="emoco")
    assert (emoco.emoco_queue_size, emoco.emoco_momentum, emoco.emoco_temperature, emoco.emoco_loss_weight,
            emoco.emoco_feature_dim) == (65536, 0.999, 0.2, 1.0, 128)  # EmoCo Sec. IV-B
    cl_ile = FineTuningArguments(output_dir=str(tmp_path), config_file="x.json", objective="cl_ile")
    assert (cl_ile.cl_ile_identity_bce_weight, cl_ile.cl_ile_bce_weight, cl_ile.cl_ile_orthogonality_weight,
            cl_ile.cl_ile_contrastive_weight, cl_ile.cl_ile_temperature) == (0.4, 1.0, 0.5, 0.4, 2.0)  # CL-ILE Sec. 4.1
    assert cl_ile.cl_ile_orthogonality_floor == 1e-6  # not in the paper: only keeps Eq. 4's log finite
    for floor in (0.0, 1.0):
        with pytest.raises(ValueError, match="--cl_ile_orthogonality_floor must lie in"):
            FineTuningArguments(output_dir=str(tmp_path), config_file="x.json", cl_ile_orthogonality_floor=floor)
    with pytest.raises(ValueError, match="--objective must be one of"):
        FineTuningArguments(output_dir=str(tmp_path), config_file="x.json", objective="moco")
    with pytest.raises(ValueError, match="--cl_ile_temperature must be > 0"):
        FineTuningArguments(output_dir=str(tmp_path), config_file="x.json", cl_ile_temperature=0)

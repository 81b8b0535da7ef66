"""Hardening: loading the wrong thing. A checkpoint of the other task, checkpoints whose weights do not match their
config (other sizes, a tensor missing, a label set changed without its embeddings), truncated weight files, pickles
that carry code, and tokenizers that do not fit the model: each is either used correctly (a checkpoint fine-tuned
for the other task is re-labelled) or refused with an error naming the file, tensor or field.

Already covered elsewhere, not repeated here:
- tests/test_modeling.py::test_loading_with_another_projection_dim_names_the_mismatch (a requested projection_dim
  that the weights do not have), ::test_from_clip_rejects_other_projection_dim,
  ::test_update_label_embeddings_rejects_a_tokenizer_that_does_not_fit.
- tests/test_processing.py::test_offline_broken_tokenizer_is_detected (CLEFProcessor.from_pretrained with the
  2-token offline tokenizer), ::test_tokenizer_that_does_not_fit_the_model_is_reported (vocabulary size, eos id).
- tests/test_convert.py::test_pickled_objects_are_refused (`load_openai_state_dict` on a pickle that would create a
  file), ::test_torchscript_archives_and_garbage_are_explained, ::test_resnet_clip_is_refused,
  ::test_missing_tensors_are_named, ::test_a_file_that_is_not_clip_is_named.
- tests/test_evaluation.py::test_labels_are_matched_by_id (`align_labels` on its own).
- tests/test_push_to_hub.py::test_broken_model_folders_are_refused_naming_the_file.
"""

import json
import os
import pickle
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_SIZE, PROJECTION_DIM, tiny_text_config, tiny_vision_config
from safetensors.torch import load_file, save_file
from test_convert import Payload, random_openai_clip, save_farl_style
from transformers import pipeline

from clef_hf import CLEFConfig, CLEFModel, CLEFProcessor, TokenizerMismatchError, train_clip_tokenizer
from clef_hf.convert_openai_clip import convert_openai_clip
from clef_hf.training import EvaluationArguments, FineTuningArguments, evaluate_checkpoint, finetune
from clef_hf.training.initialization import load_model_and_processor
from clef_hf.vocabulary import au_labels, expression_labels

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.usefixtures("fresh_accelerator_state", "one_torch_thread"), pytest.mark.timeout(120)]


def save_clef(directory: Path, tokenizer, task: str | None, labels: dict | None = None, embed: bool = True) -> Path:
    """A tiny CLEF checkpoint with its processor, as training saves it."""
    if labels is None:
        labels = {"au": au_labels([1, 2, 4]), "expression": expression_labels(), None: {}}[task]
    config = CLEFConfig(vision_config=tiny_vision_config(), text_config=tiny_text_config(tokenizer),
                        projection_dim=PROJECTION_DIM, task=task, **labels)
    torch.manual_seed(0)
    model = CLEFModel(config)
    if embed and task is not None:
        model.update_label_embeddings(tokenizer)
    model.save_pretrained(directory)
    CLEFProcessor.from_tokenizer(tokenizer, image_size=IMAGE_SIZE).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {task: save_clef(root / task, tokenizer, task) for task in ("au", "expression")}


def edited_copy(source: Path, target: Path, config_edit=None, weights_edit=None) -> Path:
    shutil.copytree(source, target)
    if config_edit is not None:
        config = json.loads((target / "config.json").read_text())
        config_edit(config)
        (target / "config.json").write_text(json.dumps(config))
    if weights_edit is not None:
        weights = load_file(target / "model.safetensors")
        weights_edit(weights)
        save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


# ---------------------------------------------------------------- a checkpoint of the other task


@pytest.mark.parametrize("source, task", [("expression", "au"), ("au", "expression")])
def test_a_checkpoint_of_the_other_task_is_fine_tuned_with_the_new_labels(tmp_path, tiny_faces, checkpoints, source,
                                                                          task):
    """`finetune --model_name_or_path <expression model> --task au` (and the reverse) replaces the label set by the
    data set's: labels, label embeddings, class weights and the best model's predictions all follow the new task."""
    results = finetune(FineTuningArguments(
        output_dir=str(tmp_path / "run"), model_name_or_path=str(checkpoints[source]), dataset=tiny_faces, task=task,
        per_device_train_batch_size=16, num_train_epochs=1, max_steps=2, learning_rate=1e-3, report_to="none", seed=1,
        eval_split="test", test_split="",  # tiny_faces has train and test splits only
    ))
    assert results["task"] == task
    best = CLEFModel.from_pretrained(tmp_path / "run" / "best")
    if task == "au":
        expected = [f"AU{n}" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26)]  # synthfaces'
    else:
        expected = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]
    assert best.config.task == task and best.config.label_ids == expected
    assert best.label_embeddings.shape == (len(expected), PROJECTION_DIM)
    assert len(best.config.class_weights) == len(expected)
    assert (best.label_embeddings.norm(dim=-1) > 0).all()
    faces = pipeline("facial-behavior", model=str(tmp_path / "run" / "best"))(torch.rand(3, 32, 32), detect_faces=False)
    assert sorted(p["label"] for p in faces[0]["predictions"]) == sorted(expected)


# ---------------------------------------------------------------- label sets that do not match


def test_evaluating_a_model_on_a_data_set_with_other_labels_names_them(tmp_path, tiny_faces, tokenizer):
    au_model = save_clef(tmp_path / "au", tokenizer, "au", au_labels([16, 27]))  # synthfaces codes neither
    with pytest.raises(ValueError, match=r"The model's AUs \['AU16', 'AU27'\] and the split's \['AU1', .*none in "
                                         r"common"):
        evaluate_checkpoint(EvaluationArguments(model_name_or_path=str(au_model), dataset=tiny_faces))
    expression_model = save_clef(tmp_path / "expression", tokenizer, "expression",
                                 expression_labels(["happiness", "sadness"]))
    with pytest.raises(ValueError, match=r"expression classes \['neutral', 'surprise', .*\] are not among the "
                                         r"model's \['happiness', 'sadness'\]"):
        evaluate_checkpoint(EvaluationArguments(model_name_or_path=str(expression_model), dataset=tiny_faces))
    pretrained = save_clef(tmp_path / "pretrained", tokenizer, None)
    with pytest.raises(ValueError, match=r"has task None: only fine-tuned AU or expression models"):
        evaluate_checkpoint(EvaluationArguments(model_name_or_path=str(pretrained), dataset=tiny_faces))

    # The script says the same, as its last line, without another traceback.
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate_model.py"), "--model_name_or_path", str(au_model),
         "--dataset", tiny_faces],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 1
    assert re.search(r"ValueError: The model's AUs \['AU16', 'AU27'\] .* none in common\.\s*$", completed.stderr)


def test_a_label_set_changed_without_its_embeddings_is_refused(tmp_path, checkpoints, tokenizer):
    """config.json lists 5 AUs but model.safetensors holds the 3 embeddings of the saved label set: before, the
    pipeline's load failed with "You set `ignore_mismatched_sizes` to `False`... look at the above report!"."""
    edited = edited_copy(checkpoints["au"], tmp_path / "edited",
                         config_edit=lambda c: c.update(au_labels([1, 2, 4, 6, 12])))
    message = r"label_embeddings: \(3, 16\) in the checkpoint, \(5, 16\) for its config"
    with pytest.raises(ValueError, match=message):
        CLEFModel.from_pretrained(edited)
    with pytest.raises(ValueError, match=message):
        pipeline("facial-behavior", model=str(edited))
    # Labels set but never embedded: the pipeline says what to call.
    unembedded = save_clef(tmp_path / "unembedded", tokenizer, "au", embed=False)
    with pytest.raises(ValueError, match=r"label_embeddings have not been computed.*update_label_embeddings"):
        pipeline("facial-behavior", model=str(unembedded))(torch.rand(3, 32, 32), detect_faces=False)


# ---------------------------------------------------------------- weights that do not match their config


def _wrong_shape(weights: dict) -> None:
    weights["text_model.encoder.layers.0.mlp.fc1.weight"] = torch.zeros(5, 5)


def _missing(weights: dict) -> None:
    del weights["vision_model.encoder.layers.1.self_attn.k_proj.weight"]


@pytest.mark.parametrize("config_edit, weights_edit, message", [
    (lambda c: c.update(projection_dim=8), None,
     r"text_projection.weight: \(16, 32\) in the checkpoint, \(8, 32\) for its config"),
    (lambda c: c["vision_config"].update(intermediate_size=48), None,
     r"vision_model.encoder.layers.0.mlp.fc1.weight: \(64, 32\) in the checkpoint, \(48, 32\) for its config"),
    (None, _wrong_shape, r"text_model.encoder.layers.0.mlp.fc1.weight: \(5, 5\) in the checkpoint, \(64, 32\)"),
    (None, _missing,
     r"lack tensors that its config needs: \['vision_model.encoder.layers.1.self_attn.k_proj.weight'\]"),
], ids=["projection_dim", "intermediate_size", "tensor-of-another-shape", "tensor-missing"])
def test_weights_that_do_not_match_the_config_are_named(tmp_path, checkpoints, config_edit, weights_edit, message):
    """Before, a mismatch raised transformers' "look at the above report!" (naming no tensor) and a missing tensor
    was silently initialised at random."""
    edited = edited_copy(checkpoints["au"], tmp_path / "edited", config_edit, weights_edit)
    with pytest.raises(ValueError, match=message):
        CLEFModel.from_pretrained(edited)
    with pytest.raises(ValueError, match=message):  # the initial weights of a training run
        load_model_and_processor(str(edited), task="au", labels=au_labels([1, 2]))
    # Asked for explicitly, the mismatch is accepted and re-initialised, as transformers does.
    assert isinstance(CLEFModel.from_pretrained(edited, ignore_mismatched_sizes=True), CLEFModel)


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5], ids=["zero-bytes", "5-bytes", "header-cut", "half"])
def test_a_truncated_weights_file_is_named(tmp_path, checkpoints, keep):
    """Before: safetensors' `Error while deserializing header: ...`, naming no file."""
    folder = shutil.copytree(checkpoints["au"], tmp_path / "truncated")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    message = re.escape(f"The weights of '{folder}' (model.safetensors) cannot be read") + ".*truncated or corrupt"
    with pytest.raises(ValueError, match=message):
        CLEFModel.from_pretrained(folder)
    with pytest.raises(ValueError, match=message):
        pipeline("facial-behavior", model=str(folder))
    with pytest.raises(ValueError, match=message):
        load_model_and_processor(str(folder), task="au", labels=au_labels([1, 2]))


def test_the_converter_names_a_truncated_checkpoint(tmp_path):
    reference = random_openai_clip(seed=1)
    for name in ("clip.pth", "clip.safetensors"):
        path = tmp_path / name
        if name.endswith(".pth"):
            save_farl_style(reference, path)
        else:
            save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(ValueError, match=re.escape(str(path))):
            convert_openai_clip(str(path), str(tmp_path / "out"))
        assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- pickles carrying code


class _TensorWithPayload:
    """Unpickles as the payload's side effect, then as a tensor: code hidden next to real weights."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"(open({self.marker!r}, 'w').close(), __import__('torch').zeros(2))[1]",)


def _payload_checkpoints(directory: Path, marker: Path) -> dict[str, Path]:
    """.pth files that would create `marker` if unpickled, in the shapes a checkpoint takes."""
    state = {f"clip.{k}": v for k, v in random_openai_clip(seed=2).state_dict().items()}
    files = {
        "top-level-object.pth": Payload(str(marker)),
        "inside-state-dict.pth": {"state_dict": {**state, "evil": Payload(str(marker))}},
        "posing-as-a-tensor.pth": {"state_dict": {**state, "clip.logit_scale": _TensorWithPayload(str(marker))}},
    }
    paths = {}
    for name, content in files.items():
        torch.save(content, directory / name)
        paths[name] = directory / name
    # A plain (not zip) pickle, protocol 2, as old `torch.save(_use_new_zipfile_serialization=False)` wrote.
    with open(directory / "legacy-pickle.pth", "wb") as file:
        pickle.dump({"state_dict": {"evil": Payload(str(marker))}}, file, protocol=2)
    paths["legacy-pickle.pth"] = directory / "legacy-pickle.pth"
    return paths


def test_the_converter_refuses_pickled_code_without_running_it(tmp_path, monkeypatch):
    """Through `convert_openai_clip` and `scripts/convert_farl.py`: each file is refused naming it, the code never
    runs (the marker file the payload would create never appears) and nothing is written."""
    marker = tmp_path / "marker"
    for name, path in _payload_checkpoints(tmp_path, marker).items():
        with pytest.raises(ValueError, match=re.escape(str(path)) + r".*(weights_only|PyTorch checkpoint)"):
            convert_openai_clip(str(path), str(tmp_path / "out"))
        monkeypatch.setattr(sys, "argv", ["convert_farl.py", "--checkpoint", str(path), "--output",
                                          str(tmp_path / "out")])
        with pytest.raises(ValueError, match=re.escape(str(path))):
            runpy.run_path(str(ROOT / "scripts" / "convert_farl.py"), run_name="__main__")
        assert not marker.exists(), f"{name}: the pickled code ran"
        assert not (tmp_path / "out").exists()
    # The payloads are real: unpickling one without weights_only does create the marker.
    torch.load(tmp_path / "top-level-object.pth", weights_only=False)
    assert marker.exists()


def test_a_pickled_weights_file_in_a_model_folder_is_not_unpickled(tmp_path, tiny_clip, tokenizer):
    """A CLIP folder whose weights are a `pytorch_model.bin` with code in it, given as `--model_name_or_path`."""
    marker = tmp_path / "marker"
    folder = tmp_path / "clip"
    tiny_clip.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save({**tiny_clip.state_dict(), "evil": Payload(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises((pickle.UnpicklingError, ValueError), match="weights_only"):  # torch's refusal
        load_model_and_processor(str(folder), task="au", labels=au_labels([1, 2]))
    assert not marker.exists(), "the pickled code ran"


# ---------------------------------------------------------------- tokenizers that do not fit


@pytest.fixture(scope="module")
def other_tokenizer():
    return train_clip_tokenizer(vocab_size=300)


def test_a_tokenizer_of_another_vocabulary_is_refused_at_pipeline_construction(tmp_path, checkpoints, other_tokenizer):
    """Before, the pipeline was built and only the first zero-shot call failed."""
    message = r"has a vocabulary of \d+ tokens but the text encoder has text_config.vocab_size=\d+"
    with pytest.raises(TokenizerMismatchError, match=message):
        pipeline("facial-behavior", model=str(checkpoints["au"]), tokenizer=other_tokenizer)
    # A checkpoint folder whose tokenizer files were replaced by another tokenizer's.
    folder = shutil.copytree(checkpoints["au"], tmp_path / "other-tokenizer")
    other_tokenizer.save_pretrained(folder)
    with pytest.raises(TokenizerMismatchError, match=message):
        pipeline("facial-behavior", model=str(folder))
    with pytest.raises(TokenizerMismatchError, match=message):  # as a training run's initial weights
        load_model_and_processor(str(folder), task="au", labels=au_labels([1, 2]))
    with pytest.raises(TokenizerMismatchError, match=message):
        CLEFModel.from_pretrained(folder).update_label_embeddings(CLEFProcessor.from_pretrained(folder))
    # A tokenizer that fits is accepted, and zero-shot works.
    pipe = pipeline("facial-behavior", model=str(checkpoints["au"]))
    assert len(pipe(torch.rand(3, 32, 32), detect_faces=False, candidate_labels=["smiling"])[0]["predictions"]) == 1


def test_a_tokenizer_with_another_end_of_text_id_is_refused(tmp_path, checkpoints, tokenizer):
    folder = edited_copy(checkpoints["au"], tmp_path / "eos",
                         config_edit=lambda c: c["text_config"].update(eos_token_id=3))
    with pytest.raises(TokenizerMismatchError, match=r"text_config.eos_token_id=3"):
        pipeline("facial-behavior", model=str(folder))
    with pytest.raises(TokenizerMismatchError, match=r"text_config.eos_token_id=3"):
        CLEFProcessor.from_pretrained(folder).check_fits(CLEFConfig.from_pretrained(folder).text_config)

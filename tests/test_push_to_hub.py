"""Publishing a trained model: `scripts/push_to_hub.py --dry-run` writes the exact upload folder (weights with the label
embeddings, config, processor, remote code, training and evaluation files, the rendered model card), the folder loads
back to the same logits, broken model folders are refused with errors naming the file, and pushing without network
fails with a message that points to --dry-run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file, save_file

from transformers import pipeline

from clef_hf import CLEFModel
from clef_hf.hub import ModelFolderError, prepare_upload_folder, required_code_files, validate_model_dir
from clef_hf.model_card import render_model_card

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "push_to_hub.py"
REPO_ID = "clef-tests/clef-au-tiny"
MEAN_F1 = 0.61234567
REMOTE_CODE = {"configuration_clef.py", "modeling_clef.py", "processing_clef.py", "losses.py", "vocabulary.py",
               "pipeline_facial_behavior.py", "faces.py", "image_inputs.py"}
EXPECTED_FILES = REMOTE_CODE | {
    "README.md", "config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
    "training_args.json", "eval_results.json",
}


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=environment,
                          cwd=ROOT, timeout=300)


def save_trained_folder(model, processor, folder: Path) -> Path:
    """What `finetune.save_best` writes: model, processor, training_args.json and eval_results.json."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    labels = list(model.config.label_ids)
    f1 = [0.5 + 0.05 * index for index in range(len(labels))]
    (folder / "eval_results.json").write_text(json.dumps({
        "epoch": 3, "split": "test", "dataset": "bp4d", "mean_f1": MEAN_F1, "f1": f1,
        "per_label_f1": dict(zip(labels, f1)), "support": [10] * len(labels),
    }))
    (folder / "training_args.json").write_text(json.dumps({
        "dataset": "bp4d", "dataset_config": "fold1", "train_split": "train", "eval_split": "test",
        "model_name_or_path": "outputs/farl", "config_file": None, "task": "au", "components": "IND",
        "num_train_epochs": 4, "learning_rate": 2e-4, "per_device_train_batch_size": 8, "seed": 0,
    }))
    return folder


@pytest.fixture
def trained_dir(tmp_path, au_model, processor) -> Path:
    return save_trained_folder(au_model, processor, tmp_path / "best")


def front_matter_and_body(card: ModelCard) -> tuple[dict, str]:
    return card.data.to_dict(), card.text


def test_dry_run_writes_the_upload_folder_with_a_model_card(trained_dir, tmp_path, au_model, pixel_values):
    out = tmp_path / "upload"
    result = run_script("--model", str(trained_dir), "--repo-id", REPO_ID, "--dry-run", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(out) in result.stdout and "README.md" in result.stdout

    files = {path.name for path in out.iterdir()}
    assert EXPECTED_FILES <= files, f"missing {sorted(EXPECTED_FILES - files)}"
    present, missing = required_code_files(out)
    assert REMOTE_CODE <= present and not missing
    unexpected = files - EXPECTED_FILES - present  # every file is expected or code the remote code imports
    assert not unexpected, f"unexpected files in the upload folder: {sorted(unexpected)}"
    assert json.loads((out / "config.json").read_text())["custom_pipelines"]["facial-behavior"]["impl"] == (
        "pipeline_facial_behavior.FacialBehaviorPipeline")
    # the label embeddings travel inside the weights
    assert load_file(out / "model.safetensors")["label_embeddings"].abs().sum() > 0

    card = ModelCard.load(out / "README.md")
    data, text = front_matter_and_body(card)
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "image-classification"
    assert {"facial-action-units", "clef", "affective-computing"} <= set(data["tags"])
    assert data["datasets"] == ["bp4d"] and data["license"] == "apache-2.0"
    (evaluation,) = card.data.eval_results
    assert evaluation.metric_type == "f1" and evaluation.metric_value == pytest.approx(MEAN_F1, abs=1e-4)
    assert (evaluation.dataset_type, evaluation.dataset_config, evaluation.dataset_split) == ("bp4d", "fold1", "test")
    assert card.data.model_name == "clef-au-tiny"

    assert "| AU12 | lip corner puller |" in text  # labels table
    assert "| AU12 | lip corner puller | 0.7000 | 10 |" in text  # per-label F1
    assert "fold1 trains on parts 1 and 2 and tests on part 3" in text
    assert "## Limitations, biases and ethical considerations" in text
    assert "Facial movements are not emotions" in text and "Demographic bias" in text
    assert "Consent and surveillance" in text and "Not for high-stakes decisions" in text
    assert f'pipeline("facial-behavior", model="{REPO_ID}")' in text
    assert f'pipeline("facial-behavior", model="{REPO_ID}", trust_remote_code=True)' in text
    assert "@inproceedings{zhang2023clef" in text and "BP4D-Spontaneous" in text

    reloaded = CLEFModel.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(pixel_values=pixel_values).logits, au_model(pixel_values=pixel_values).logits)

    again = run_script("--model", str(trained_dir), "--repo-id", REPO_ID, "--dry-run", str(out))
    assert again.returncode == 1 and "not an empty folder" in again.stderr


def test_push_offline_fails_with_a_clear_message(trained_dir):
    result = run_script("--model", str(trained_dir), "--repo-id", REPO_ID)
    assert result.returncode == 1
    assert "could not reach the hugging face hub" in result.stderr.lower()
    assert "HF_HUB_OFFLINE" in result.stderr and "--dry-run" in result.stderr
    assert "Traceback" not in result.stderr


def test_push_without_network_fails_with_a_clear_message(trained_dir):
    # Nothing listens on port 9 of the loopback: the connection is refused at once, network or not.
    result = run_script("--model", str(trained_dir), "--repo-id", REPO_ID, HF_HUB_OFFLINE="0",
                        HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN="hf_not_a_real_token")
    assert result.returncode == 1
    assert "could not reach the hugging face hub at http://127.0.0.1:9" in result.stderr.lower()
    assert "--dry-run" in result.stderr and "Traceback" not in result.stderr


def face_image(seed: int = 0) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (48, 40, 3), generator=generator, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def test_the_upload_folder_loads_back_with_pipeline_offline(trained_dir, tmp_path, au_model, processor):
    out = prepare_upload_folder(trained_dir, tmp_path / "upload", REPO_ID)
    detector = pipeline("facial-behavior", model=str(out), device="cpu")  # compared with the CPU model to 1e-5
    image = face_image()
    (face,) = detector(image, detect_faces=False)
    assert [p["label"] for p in face["predictions"]] == list(au_model.config.label_ids)
    with torch.no_grad():
        expected = au_model(**processor(images=image, return_tensors="pt")).logits.sigmoid()[0]
    assert [p["score"] for p in face["predictions"]] == pytest.approx(expected.tolist(), abs=1e-5)


def test_the_upload_folder_runs_the_pipeline_without_the_package(trained_dir, tmp_path, au_model):
    """What the card promises users without clef-hf: `pipeline(..., trust_remote_code=True)` on the repository."""
    out = prepare_upload_folder(trained_dir, tmp_path / "upload", REPO_ID)
    face_image().save(tmp_path / "face.png")
    code = (
        "import sys\n"
        "from transformers import pipeline\n"
        f"detector = pipeline('facial-behavior', model={str(out)!r}, trust_remote_code=True)\n"
        f"(face,) = detector({str(tmp_path / 'face.png')!r}, detect_faces=False)\n"
        "assert 'clef_hf' not in sys.modules, 'the package was imported'\n"
        "print('LABELS', ' '.join(p['label'] for p in face['predictions']))\n"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"LABELS {' '.join(au_model.config.label_ids)}" in result.stdout


def test_missing_remote_code_is_saved_again(trained_dir, tmp_path):
    (trained_dir / "losses.py").unlink()
    assert required_code_files(trained_dir)[1] == {"losses.py"}
    out = prepare_upload_folder(trained_dir, tmp_path / "upload", REPO_ID)
    present, missing = required_code_files(out)
    assert REMOTE_CODE <= present and not missing


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("config.json", "config.json is missing"),
        ("model.safetensors", "model.safetensors is missing"),
        ("processor_config.json", "processor_config.json or"),
        ("tokenizer.json", "tokenizer.json or"),
        ("zero label embeddings", "label_embeddings that were not computed"),
    ],
)
def test_broken_model_folders_are_refused_naming_the_file(trained_dir, breakage, message):
    if breakage == "zero label embeddings":
        weights = load_file(trained_dir / "model.safetensors")
        weights["label_embeddings"][2] = 0.0
        save_file(weights, trained_dir / "model.safetensors", metadata={"format": "pt"})
    else:
        (trained_dir / breakage).unlink()
    with pytest.raises((FileNotFoundError, ModelFolderError)) as raised:
        validate_model_dir(trained_dir)
    assert message in str(raised.value) and str(trained_dir) in str(raised.value)
    if breakage == "zero label embeddings":
        assert "AU4" in str(raised.value)


def test_upload_folder_must_be_new_and_outside_the_model(trained_dir, tmp_path):
    with pytest.raises(ValueError, match="outside the model folder"):
        prepare_upload_folder(trained_dir, trained_dir / "upload", REPO_ID)
    with pytest.raises(ValueError, match="not a valid Hub repository id"):
        prepare_upload_folder(trained_dir, tmp_path / "upload", "not a repo id")


def test_card_without_training_records_and_for_expressions(tmp_path, make_config, tokenizer, processor):
    torch.manual_seed(0)
    model = CLEFModel(make_config("expression"))
    model.update_label_embeddings(tokenizer)
    folder = tmp_path / "expression"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)

    card = render_model_card(folder, "me/clef-expression")
    assert card.data.eval_results is None and "facial-expression-recognition" in card.data.tags
    assert "no `training_args.json`" in card.text and "no `eval_results.json`" in card.text
    assert "| happiness |" in card.text
    assert "mirror image" not in card.text
    model.config.test_time_flip = True  # as --select_test_time_flip saves it
    model.save_pretrained(folder)
    assert "mirror image's embeddings (`config.test_time_flip`" in render_model_card(folder, "me/e").text
    model.config.test_time_flip = False
    model.save_pretrained(folder)

    labels = list(model.config.label_ids)
    matrix = [[5 if row == column else 1 for column in range(len(labels))] for row in range(len(labels))]
    (folder / "eval_results.json").write_text(json.dumps({
        "epoch": 1, "split": "test", "dataset": "raf_db", "accuracy": 0.75, "mean_class_accuracy": 0.7,
        "per_label_accuracy": {label: 0.7 for label in labels}, "confusion_matrix": matrix,
    }))
    card = render_model_card(folder, "me/clef-expression", base_model="me/clef-pretrained", extra_tags=["raf-db"])
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [
        ("accuracy", 0.75), ("mean class accuracy", 0.7)]
    assert card.data.base_model == "me/clef-pretrained" and card.data.tags[-1] == "raf-db"
    assert "Confusion matrix" in card.text and f"| **{labels[0]}** | 5 | 1 |" in card.text
    assert "collected from the internet" in card.text  # RAF-DB is an in-the-wild data set
    ModelCard(str(card))  # the front matter parses back


def test_the_card_names_a_cl_ile_objective_and_leaves_out_clefs_components(trained_dir):
    card = render_model_card(trained_dir, REPO_ID)
    assert "| fine-tuning components (Table 6 of the paper) | IND |" in card.text
    args = json.loads((trained_dir / "training_args.json").read_text())
    (trained_dir / "training_args.json").write_text(json.dumps({**args, "objective": "cl_ile"}))
    card = render_model_card(trained_dir, REPO_ID)
    assert "| fine-tuning objective | CL-ILE (Lian et al., BMVC 2023)" in card.text
    assert "fine-tuning components" not in card.text

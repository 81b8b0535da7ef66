"""Relevancy maps (`clef_hf.explain`, the paper's Fig. 4): the rules of Chefer et al. (2021) on hand-made attention
maps, the outputs on a tiny model, the plots, and, on an AU model trained with the demo's recipe and data, where on
the synthetic faces (whose generator knows each face's pose) the maps of brow and mouth AUs lie."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from clef_hf import CLEFModel, CLEFProcessor
from clef_hf.explain import (
    accumulate_relevancy,
    explain,
    explain_labels,
    half_masking_drops,
    label_prompt,
    plot_relevancy,
    plot_relevancy_grid,
    plot_token_relevance,
    relevancy_above,
    summarize_face_shares,
    upper_face_shares,
)
from dataset_builders.synthfaces.generator import (
    AU_NUMBERS,
    AU_REGIONS,
    face_halves_boundary,
    labelled_faces,
    project,
    sample_frame,
    sample_identity,
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ the rules


def test_one_layer_adds_the_positive_gradient_weighted_attention_to_the_identity():
    attention = torch.tensor([[[[0.2, 0.8, 0.0], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]]]])  # (1, 1 head, 3, 3)
    gradient = torch.tensor([[[[1.0, 1.0, 1.0], [1.0, -2.0, 1.0], [1.0, 1.0, 1.0]]]])
    relevancy = accumulate_relevancy([attention], [gradient])
    expected = torch.eye(3) + torch.tensor([[0.2, 0.8, 0.0], [0.5, 0.0, 0.0], [0.1, 0.1, 0.8]])
    torch.testing.assert_close(relevancy[0], expected)


def test_layers_compose_first_to_last_and_heads_are_averaged():
    first = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]]])  # 2 heads, averaged: all 0.5
    second = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    ones = [torch.ones_like(first), torch.ones_like(second)]
    relevancy = accumulate_relevancy([first, second], ones)[0]
    r1 = torch.eye(2) + torch.full((2, 2), 0.5)
    torch.testing.assert_close(relevancy, r1 + second[0, 0] @ r1)
    with pytest.raises(ValueError, match="1 maps and 2"):
        accumulate_relevancy([first], ones)


def test_relevancy_above_splits_a_map_at_a_row():
    uniform = np.ones((10, 4))
    assert relevancy_above(uniform, 0.35) == pytest.approx(0.35)
    top = np.zeros((10, 4))
    top[:3] = 1.0
    assert relevancy_above(top, 0.3) == pytest.approx(1.0)
    assert relevancy_above(top, 0.15) == pytest.approx(0.5)
    assert relevancy_above(np.zeros((4, 4)), 0.5) == 0.0
    with pytest.raises(ValueError, match="row"):
        relevancy_above(uniform, 1.5)
    with pytest.raises(ValueError, match="non-negative"):
        relevancy_above(-uniform, 0.5)
    with pytest.raises(ValueError, match="shape"):
        relevancy_above(np.ones(4), 0.5)


# ----------------------------------------------------------------------------------------- a tiny model


def test_label_prompts_by_id_or_name_and_descriptions(au_model, make_config):
    assert label_prompt(au_model.config, "AU12") == label_prompt(au_model.config, "lip corner puller")
    assert "lip corner puller" in label_prompt(au_model.config, "AU12")
    described = make_config("au", label_text="descriptions").to_dict()
    from clef_hf import CLEFConfig

    config = CLEFConfig(**described)
    index = config.label_ids.index("AU12")
    assert config.label_descriptions[index] in label_prompt(config, "AU12")
    with pytest.raises(ValueError, match="'AU99'.*label id"):
        label_prompt(au_model.config, "AU99")


def test_explain_gives_maps_the_size_of_the_image_and_word_relevances(au_model, processor):
    au_model.train()
    implementations = (au_model.vision_model.config._attn_implementation, au_model.text_model.config._attn_implementation)
    image = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype("uint8")
    relevancies = explain_labels(au_model, processor, image, labels=["AU1", "AU12"], texts=["a smiling face"])
    assert [r.text for r in relevancies][2] == "a smiling face"
    grid = au_model.config.vision_config.image_size // au_model.config.vision_config.patch_size
    for relevancy in relevancies:
        assert relevancy.patch_map.shape == (grid, grid) and relevancy.image_map.shape == (48, 40)
        assert relevancy.image_map.min() >= 0 and relevancy.image_map.max() == pytest.approx(1.0)
        assert relevancy.token_relevance.shape == (len(relevancy.tokens),)
        assert relevancy.token_relevance[0] == 0 and relevancy.token_relevance[-1] == 0
        assert relevancy.token_relevance.sum() == pytest.approx(1.0, abs=1e-5)
        with torch.no_grad():  # the score explained is the model's own image-text cosine similarity
            inputs = processor(text=[relevancy.text], images=image, return_tensors="pt")
            image_embeds = au_model.get_image_features(pixel_values=inputs["pixel_values"])
            text_embeds = au_model.get_text_features(input_ids=inputs["input_ids"])
            image_embeds = getattr(image_embeds, "pooler_output", image_embeds)
            text_embeds = getattr(text_embeds, "pooler_output", text_embeds)
            cosine = torch.nn.functional.cosine_similarity(image_embeds, text_embeds)
        assert relevancy.score == pytest.approx(float(cosine), abs=1e-4)
    assert not np.allclose(relevancies[0].patch_map, relevancies[1].patch_map)  # the text changes the map
    # The model is left as it was: training mode and attention implementation.
    assert au_model.training
    assert (au_model.vision_model.config._attn_implementation,
            au_model.text_model.config._attn_implementation) == implementations
    assert not any(p.grad is not None for p in au_model.parameters())


def test_explain_takes_exactly_one_of_label_and_text(au_model, processor):
    image = np.zeros((32, 32, 3), dtype="uint8")
    with pytest.raises(ValueError, match="exactly one"):
        explain(au_model, processor, image)
    with pytest.raises(ValueError, match="exactly one"):
        explain(au_model, processor, image, label="AU1", text="a face")
    with pytest.raises(ValueError, match="'AU7'"):
        explain(au_model, processor, image, label="AU7")


def test_plots_overlay_maps_on_faces(au_model, processor):
    images = [(np.random.default_rng(i).random((32, 32, 3)) * 255).astype("uint8") for i in range(2)]
    rows = [explain_labels(au_model, processor, image, ["AU1", "AU12"]) for image in images]
    figure = plot_relevancy_grid(images, rows, column_titles=["AU1", "AU12"])
    assert isinstance(figure, Figure) and len(figure.axes) == 2 * 3
    assert figure.axes[1].get_title().startswith("AU1")
    single = plot_relevancy(images[0], rows[0][1])
    assert len(single.axes[0].images) == 2  # the face and the map over it
    words = plot_token_relevance(rows[0][1])
    assert len(words.axes[0].patches) == len(rows[0][1].tokens) - 2
    with pytest.raises(ValueError, match="pass the image that was explained"):
        plot_relevancy(np.zeros((20, 20, 3), dtype="uint8"), rows[0][0])
    with pytest.raises(ValueError, match="row 1 has 1"):
        plot_relevancy_grid(images, [rows[0], rows[1][:1]])


def test_half_masking_measures_what_painting_over_a_half_takes_away(au_model, processor):
    flat = np.full((32, 32, 3), 120, dtype="uint8")  # painting a flat face with its mean changes nothing
    noisy = (np.random.default_rng(3).random((32, 32, 3)) * 255).astype("uint8")
    drops = half_masking_drops(au_model, processor, [(flat, 0.5, ["AU1"]), (noisy, 0.5, ["AU1", "AU12"])],
                               ["AU1", "AU12"])
    assert drops["AU1"].shape == (2, 2) and drops["AU12"].shape == (1, 2)
    np.testing.assert_allclose(drops["AU1"][0], 0.0, atol=1e-6)
    assert np.abs(drops["AU1"][1]).max() > 1e-4
    summary = summarize_face_shares({"AU1": np.array([[0.7, 0.5], [0.4, 0.5]])}, {"AU1": drops["AU1"]})
    assert summary["AU1"]["upper_fraction"] == 0.5 and summary["AU1"]["faces"] == 2
    assert "drop_upper_masked" in summary["AU1"]
    with pytest.raises(ValueError, match="AU99"):
        half_masking_drops(au_model, processor, [], ["AU99"])


# ------------------------------------------------------------------------------ the generator's face halves


def test_the_face_halves_boundary_lies_between_the_brows_and_the_mouth():
    identity = sample_identity(0, 3)
    for frame_index in range(5):
        pose = sample_frame(0, identity, "T1", frame_index).pose
        boundary = face_halves_boundary(identity, pose)
        brow = project((0.5, identity.brow_y), pose)[0, 1]
        eyes = project((0.5, identity.eye_y), pose)[0, 1]
        mouth = project((0.5, identity.mouth_y), pose)[0, 1]
        assert brow < eyes < boundary < mouth
    assert set(AU_REGIONS) == set(AU_NUMBERS)
    assert {AU_REGIONS[n] for n in (1, 2, 4)} == {"upper"} and {AU_REGIONS[n] for n in (12, 25)} == {"lower"}


# ------------------------------------------------------------- an AU model trained with the demo's recipe

#: The demo's data (`MainJobOptions.data_options`): its test subjects are indices 24-27.
DEMO_DATA = {"num_subjects": 28, "num_validation_subjects": 4, "num_test_subjects": 4, "frames_per_activity": 16,
             "seed": 0}
TEST_SUBJECTS = range(24, 28)


@pytest.fixture(scope="module")
def demo_au_model(tmp_path_factory):
    """The demo's row "random init -> stage 2 (I)": its recipe and data, at the budget the figures below were measured
    with (10 epochs, 800 steps, as every demo row now gets)."""
    from accelerate.state import AcceleratorState, GradientState

    from clef_hf.training.arguments import FineTuningArguments
    from clef_hf.training.finetune import finetune
    from clef_hf.training.recipes import SYNTHFACES_FINETUNING, SYNTHFACES_MODEL_CONFIG, SYNTHFACES_RECIPE

    root = tmp_path_factory.mktemp("demo-au")
    try:
        finetune(FineTuningArguments(
            output_dir=str(root / "run"), task="au", components="I", config_file=SYNTHFACES_MODEL_CONFIG,
            dataset="synthfaces", dataset_options=json.dumps(DEMO_DATA), cache_dir=str(root / "data"), num_proc=2,
            num_train_epochs=10, eval_split="validation", test_split="test", report_to="none",
            checkpointing_steps=10_000, **SYNTHFACES_FINETUNING, **{**SYNTHFACES_RECIPE, "seed": 0},
        ))
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    return str(root / "run" / "best")


@pytest.fixture(scope="module")
def face_halves(demo_au_model):
    model = CLEFModel.from_pretrained(demo_au_model)
    processor = CLEFProcessor.from_pretrained(demo_au_model)
    faces = [(image, boundary, [f"AU{n}" for n, on in zip(AU_NUMBERS, frame.au) if on])
             for image, frame, boundary in labelled_faces(0, TEST_SUBJECTS, 6, model.config.vision_config.image_size)]
    labels = ["AU1", "AU2", "AU12", "AU25"]
    summary = summarize_face_shares(upper_face_shares(model, processor, faces, labels),
                                    half_masking_drops(model, processor, faces, labels))
    print(json.dumps(summary, indent=1))  # shown with pytest -s
    return summary


@pytest.mark.timeout(1800)  # training 800 steps on 2 shared cores; nothing here depends on speed
def test_brow_au_relevancy_lies_in_the_upper_face(face_halves):
    # Measured: AU1 0.91, AU2 0.94 of the held-out faces showing them (69 and 48 faces).
    for au in ("AU1", "AU2"):
        assert face_halves[au]["faces"] >= 40
        assert face_halves[au]["upper_fraction"] >= 0.7, face_halves[au]
        assert face_halves[au]["mean_share_above"] > face_halves[au]["mean_area_above"] + 0.05, face_halves[au]


@pytest.mark.timeout(1800)
def test_masking_the_upper_face_takes_away_the_brow_aus(face_halves):
    # The occlusion check the maps should agree with: a brow AU's similarity falls when the upper face is masked,
    # and far less when the lower face is.
    for au in ("AU1", "AU2"):
        # Measured: AU1 0.74, AU2 0.81 of the faces; mean falls 0.012 / 0.027 (upper masked) and -0.007 / -0.010.
        assert face_halves[au]["upper_matters_fraction"] >= 0.6, face_halves[au]
        assert face_halves[au]["drop_upper_masked"] > face_halves[au]["drop_lower_masked"], face_halves[au]


# ------------------------------------------------------------------------------------------ the demo's saved model

#: `make demo`'s saved AU model (stage 0 -> stage 1 -> stage 2, IND: outputs/demo/au-model), copied by
#: `make demo-fixture` with the job's options: the trained model issue 16 asks the face-halves test to run on.
DEMO_FIXTURE = ROOT / "tests" / "fixtures" / "demo_au_model"


def test_the_shipped_demo_model_is_the_current_demos():
    """The fixture must be what `make demo` trains now: refresh it (`make demo && make demo-fixture`) when the main
    job's options or the recipe change."""
    from dataclasses import asdict

    from clef_hf.training.main_job import MainJobOptions
    from clef_hf.training.recipes import SYNTHFACES_FINETUNING, SYNTHFACES_RECIPE

    options = json.loads((DEMO_FIXTURE / "main_job_options.json").read_text())
    current = asdict(MainJobOptions())
    for name in ("output_dir", "workers", "worker_threads"):  # where and how fast, not what is trained
        options.pop(name), current.pop(name)
    assert options == current
    training = json.loads((DEMO_FIXTURE / "training_args.json").read_text())
    assert (training["task"], training["components"]) == ("au", "IND")
    assert training["model_name_or_path"].endswith(os.path.join("stage1", "model"))  # stage 0 + 1, as the demo saves
    assert json.loads(training["dataset_options"]) == MainJobOptions().data_options
    assert training["num_train_epochs"] == MainJobOptions().finetuning_epochs
    for name, value in {**SYNTHFACES_RECIPE, **SYNTHFACES_FINETUNING}.items():
        assert training[name] == value, name


@pytest.fixture(scope="module")
def saved_model_halves():
    """Face halves of the demo's saved AU model on its test subjects, every test face (16 frames per task)."""
    model = CLEFModel.from_pretrained(DEMO_FIXTURE)
    processor = CLEFProcessor.from_pretrained(DEMO_FIXTURE)
    faces = [(image, boundary, [f"AU{n}" for n, on in zip(AU_NUMBERS, frame.au) if on])
             for image, frame, boundary in labelled_faces(0, TEST_SUBJECTS, 16, model.config.vision_config.image_size)]
    labels = ["AU1", "AU2", "AU4", "AU12", "AU25"]
    summary = summarize_face_shares(upper_face_shares(model, processor, faces, labels),
                                    half_masking_drops(model, processor, faces, labels))
    print(json.dumps(summary, indent=1))  # shown with pytest -s
    return summary


def test_the_saved_models_brow_au_maps_lie_in_the_upper_face(saved_model_halves):
    # Measured on the fixture: AU1 0.87 and AU2 0.93 of 188 and 136 faces lean up (share above 0.74 / 0.77 against a
    # uniform map's 0.54); masking the upper face takes 0.27 / 0.34 of their similarity, the lower face 0.08 / 0.08.
    for au in ("AU1", "AU2"):
        assert saved_model_halves[au]["faces"] >= 100
        assert saved_model_halves[au]["upper_fraction"] >= 0.8, saved_model_halves[au]
        assert saved_model_halves[au]["mean_share_above"] > saved_model_halves[au]["mean_area_above"] + 0.1
        assert saved_model_halves[au]["drop_upper_masked"] > saved_model_halves[au]["drop_lower_masked"]


def test_the_saved_models_lips_part_maps_lean_to_the_lower_face(saved_model_halves):
    # Measured on the fixture: 0.46 of 91 faces lean up, the mean share above the boundary is below a uniform map's
    # (0.530 against 0.541), and occlusion is clearer: masking the lower face takes 0.095 of the similarity, the upper
    # face 0.026, and the upper face matters more on 0.27 of the faces. (The previous commit's model, stage 0 on
    # captions that named at most 4 movements: 0.24 of the faces leaning up, share 0.467.)
    au25 = saved_model_halves["AU25"]
    assert au25["faces"] >= 50
    assert au25["upper_fraction"] < 0.5, au25
    assert au25["mean_share_above"] < au25["mean_area_above"], au25
    # and the occlusion check agrees: masking the lower face takes more of AU25's similarity than masking the upper
    assert au25["drop_lower_masked"] > au25["drop_upper_masked"], au25
    assert au25["upper_matters_fraction"] <= 1 / 3, au25


@pytest.mark.xfail(strict=True, reason=(
    "the demo's saved model scores AU12 (lip corner puller) on the eyes: its maps lean to the upper face on most "
    "faces and masking the upper face takes more of AU12's similarity than masking the lower face does, so the maps "
    "are faithful to a model that reads the eyes' crinkle (AU6, which comes with smiles in the data and the stage-0 "
    "captions), not the mouth; docs/explain.md. Strict: a refreshed fixture that reads AU12 on the mouth fails this "
    "xfail, and the marker comes off."
))
def test_the_saved_models_lip_corner_puller_maps_lie_in_the_lower_face(saved_model_halves):
    assert saved_model_halves["AU12"]["upper_fraction"] <= 1 / 3, saved_model_halves["AU12"]


def test_the_script_writes_the_grid_and_the_face_halves(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "relevancy_grid.py"), "--model", str(DEMO_FIXTURE), "--labels", "AU1",
         "AU12", "--subjects", "24", "--frames_per_activity", "1", "--faces", "2", "--output_dir", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads((tmp_path / "face_halves.json").read_text())
    assert set(record["labels"]) == {"AU1", "AU12"} and record["subjects"] == [24]
    assert {"upper_fraction", "drop_upper_masked", "drop_lower_masked"} <= set(record["labels"]["AU1"])
    assert (tmp_path / "relevancy_grid.png").stat().st_size > 1000
    failed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "relevancy_grid.py"), "--model", str(DEMO_FIXTURE), "--labels", "AU99"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )
    assert failed.returncode != 0 and "AU99" in failed.stderr

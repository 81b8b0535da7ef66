"""`clef_hf.feature_tsne` and `scripts/tsne_stages.py`: silhouette scores that tell grouped features from shuffled
labels, deterministic t-SNE embeddings, the per-stage figure, the image features of a real tiny CLEF model, and the
script end to end on a tiny saved model and a tiny config over a tiny synthfaces split."""

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import IMAGE_SIZE, PROJECTION_DIM
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from clef_hf import CLEFModel
from clef_hf.feature_tsne import (
    FeaturePanel,
    effective_perplexity,
    expression_images,
    image_features,
    load_stage_model,
    plot_feature_tsne,
    silhouette,
    stratified_subset,
    tsne_embedding,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tsne_stages.py"
NAMES = ["neutral", "happiness", "sadness"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def grouped_features(per_class: int = 20, num_classes: int = 3, dim: int = 16, spread: float = 0.05, seed: int = 0):
    """(per_class * num_classes, dim) unit vectors in tight groups around one random direction per class, and labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    labels = np.repeat(np.arange(num_classes), per_class)
    points = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True)
    points = points + spread * rng.normal(size=points.shape)
    return points / np.linalg.norm(points, axis=1, keepdims=True), labels


def load_script():
    spec = importlib.util.spec_from_file_location("tsne_stages", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_silhouette_is_high_for_grouped_features_and_near_zero_for_shuffled_labels():
    features, labels = grouped_features()
    assert silhouette(features, labels) > 0.5
    assert silhouette(features, labels, metric="euclidean") > 0.5
    shuffled = np.random.default_rng(1).permutation(labels)
    assert abs(silhouette(features, shuffled)) < 0.1


def test_silhouette_names_bad_labels():
    features, labels = grouped_features(per_class=4)
    with pytest.raises(ValueError, match="at least 2 expression classes.*1"):
        silhouette(features, np.zeros(len(features), dtype=int))
    with pytest.raises(ValueError, match="labels has 11 entries but features has 12 rows"):
        silhouette(features, labels[:11])
    with pytest.raises(ValueError, match="fewer classes than points"):
        silhouette(features, np.arange(len(features)))
    with pytest.raises(ValueError, match=r"\(n, dim\) array, got shape \(12,\)"):
        silhouette(features[:, 0], labels)
    broken = features.copy()
    broken[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        silhouette(broken, labels)


def test_tsne_embedding_is_2d_deterministic_for_a_seed_and_keeps_groups():
    features, labels = grouped_features(per_class=10)
    first = tsne_embedding(features, seed=0)
    assert first.shape == (30, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, tsne_embedding(features, seed=0))
    np.testing.assert_array_equal(tsne_embedding(features[::-1], seed=0), tsne_embedding(features[::-1], seed=0))
    assert silhouette(first, labels, metric="euclidean") > 0.5  # the groups survive the embedding

    assert effective_perplexity(30) == pytest.approx(29 / 3)  # clipped below n
    assert effective_perplexity(1000) == 30.0 and effective_perplexity(1000, 5.0) == 5.0
    assert tsne_embedding(features[:4], seed=0).shape == (4, 2)  # tiny n: the perplexity is clipped, no error
    with pytest.raises(ValueError, match="at least 3 points"):
        tsne_embedding(features[:2])
    with pytest.raises(ValueError, match="perplexity must be positive"):
        tsne_embedding(features, perplexity=0)


def test_stratified_subset_keeps_class_proportions_and_every_class():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 9 + [3] * 1)
    subset = stratified_subset(labels, 20, seed=0)
    assert len(subset) == 20 and len(set(subset.tolist())) == 20 and np.all(np.diff(subset) > 0)
    counts = np.bincount(labels[subset], minlength=4)
    assert counts.tolist() in ([11, 6, 2, 1], [12, 5, 2, 1])  # proportional; the one-image class is kept
    np.testing.assert_array_equal(subset, stratified_subset(labels, 20, seed=0))
    assert not np.array_equal(subset, stratified_subset(labels, 20, seed=1))
    np.testing.assert_array_equal(stratified_subset(labels, 500), np.arange(100))
    with pytest.raises(ValueError, match="max_items must be a positive integer, got 0"):
        stratified_subset(labels, 0)


def test_image_features_are_the_models_normalised_features(au_model, processor):
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8))
              for i in range(5)]
    images[0] = images[0].convert("L")  # any mode: converted to RGB as evaluation does
    au_model.train()
    features = image_features(au_model, processor, images, batch_size=2)
    assert au_model.training  # the mode is restored
    assert features.shape == (5, PROJECTION_DIM) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)

    pixels = processor.image_processor(images=[image.convert("RGB") for image in images],
                                       return_tensors="pt")["pixel_values"]
    assert pixels.shape[-1] == IMAGE_SIZE
    with torch.no_grad():
        expected = torch.nn.functional.normalize(au_model.eval().get_image_features(pixels), dim=-1).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-5)
    np.testing.assert_allclose(image_features(au_model, processor.image_processor, images, batch_size=64), features,
                               atol=1e-5)
    with pytest.raises(TypeError, match=r"images\[1\] is a ndarray"):
        image_features(au_model, processor, [images[0], np.zeros((4, 4, 3))])
    with pytest.raises(ValueError, match="at least one image"):
        image_features(au_model, processor, [])


def test_the_figure_has_one_panel_per_stage_with_its_silhouette():
    features, labels = grouped_features(per_class=5)
    embedding = features[:, :2]
    panels = [("initial", embedding, labels, NAMES, 0.0123),
              FeaturePanel("fine-tuned", embedding * 2, labels[::-1].copy(), NAMES, 0.789),
              ("no score", embedding[:10], labels[:10], NAMES, None)]
    figure = plot_feature_tsne(panels)
    assert isinstance(figure, Figure) and len(figure.axes) == 3
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["initial\nsilhouette 0.012", "fine-tuned\nsilhouette 0.789", "no score"]
    # one scatter per class present; a class has one colour in every panel
    assert [len(ax.collections) for ax in figure.axes] == [3, 3, 2]
    colours = [[tuple(c.get_facecolor()[0]) for c in ax.collections] for ax in figure.axes]
    assert colours[0] == colours[1] and colours[2] == colours[0][:2] and len(set(colours[0])) == 3
    np.testing.assert_allclose(np.concatenate([c.get_offsets() for c in figure.axes[0].collections]),
                               embedding[np.argsort(labels, kind="stable")])
    legend = figure.axes[-1].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == NAMES
    assert [to_rgba(handle.get_color())[:3] for handle in legend.legend_handles] == [c[:3] for c in colours[0]]
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "PNG"


def test_bad_panels_are_named():
    features, labels = grouped_features(per_class=3)
    with pytest.raises(ValueError, match=r"panels\[0\] \('a'\): the embedding must be \(n, 2\)"):
        plot_feature_tsne([("a", features, labels, NAMES, 0.1)])
    with pytest.raises(ValueError, match=r"panels\[1\] \('b'\): labels has shape \(8,\) but the embedding has 9"):
        plot_feature_tsne([("a", features[:, :2], labels, NAMES, 0.1), ("b", features[:, :2], labels[:8], NAMES)])
    with pytest.raises(ValueError, match=r"class ids in 0\.\.1"):
        plot_feature_tsne([("a", features[:, :2], labels, NAMES[:2], 0.1)])
    with pytest.raises(TypeError, match=r"panels\[0\] must be \(title, embedding"):
        plot_feature_tsne([("a", features[:, :2])])
    with pytest.raises(ValueError, match="at least one panel"):
        plot_feature_tsne([])


def test_a_config_file_gives_a_fresh_model_per_seed_and_bad_paths_are_named(tiny_config_file, tmp_path):
    first, processor = load_stage_model(tiny_config_file, seed=3)
    state = torch.get_rng_state()
    again, _ = load_stage_model(tiny_config_file, seed=3)
    other, _ = load_stage_model(tiny_config_file, seed=4)
    assert torch.equal(state, torch.get_rng_state())  # the global random state is left alone
    assert isinstance(first, CLEFModel) and not first.training and first.config.task is None
    assert processor.image_processor.crop_size["height"] == IMAGE_SIZE
    weight = "visual_projection.weight"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])

    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match=f"{missing!r} is neither a saved model folder nor a CLEFConfig JSON"):
        load_stage_model(missing)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="notes.txt' is a file but not a CLEFConfig JSON"):
        load_stage_model(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty is a folder without config.json"):
        load_stage_model(tmp_path / "empty")


@pytest.fixture(scope="module")
def tiny_split_options(tmp_path_factory) -> dict:
    """Options of a tiny synthfaces set (1 test subject, 2 frames per task: 16 test images of 32 px) and its cache."""
    return {"cache_dir": str(tmp_path_factory.mktemp("tsne-data")),
            "dataset_options": json.dumps({"num_subjects": 2, "num_test_subjects": 1, "frames_per_activity": 2,
                                           "image_size": IMAGE_SIZE, "seed": 0})}


def test_the_script_writes_the_figure_and_every_stages_silhouette(
    make_config, tokenizer, processor, tiny_config_file, tiny_split_options, tmp_path, capsys
):
    torch.manual_seed(0)
    model = CLEFModel(make_config("expression"))
    model.update_label_embeddings(tokenizer)
    model.save_pretrained(tmp_path / "fine-tuned")
    processor.save_pretrained(tmp_path / "fine-tuned")
    output_dir = tmp_path / "tsne"

    results = load_script().main([
        "--stage", f"initial={tiny_config_file}", "--stage", f"stage 0 + 1={tmp_path / 'fine-tuned'}",
        "--dataset", "synthfaces", "--dataset_options", tiny_split_options["dataset_options"],
        "--cache_dir", tiny_split_options["cache_dir"], "--split", "test", "--max_images", "12",
        "--output_dir", str(output_dir), "--device", "cpu",
    ])
    with Image.open(output_dir / "tsne.png") as png:
        assert png.format == "PNG" and png.width > png.height > 100
    written = json.loads((output_dir / "silhouette.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert list(written["stages"]) == ["initial", "stage 0 + 1"]
    assert written["num_images"] == 12 and written["split"] == "test" and written["dataset"] == "synthfaces"
    assert sum(written["class_counts"].values()) == 12 and len(written["label_names"]) == 8
    for name, stage in written["stages"].items():
        assert stage["split"] == "test" and stage["num_images"] == 12
        assert -1 <= stage["feature_silhouette"] <= 1 and -1 <= stage["tsne_silhouette"] <= 1
    assert written["stages"]["initial"]["model"] == tiny_config_file
    # different models, different features
    assert written["stages"]["initial"]["feature_silhouette"] != written["stages"]["stage 0 + 1"]["feature_silhouette"]
    printed = capsys.readouterr().out
    assert "initial" in printed and "stage 0 + 1" in printed and "12 images of the 'test' split" in printed

    # the same split through the library: the script's scores are those of its functions
    from clef_hf.training.arguments import DataArguments
    from clef_hf.training.data import load_splits

    split = load_splits(DataArguments(dataset="synthfaces", **tiny_split_options))["test"]
    images, labels, names = expression_images(split, max_images=12, seed=0)
    assert len(images) == 12 and names == written["label_names"]
    loaded, loaded_processor = load_stage_model(tmp_path / "fine-tuned")
    features = image_features(loaded, loaded_processor, images)
    assert silhouette(features, labels) == pytest.approx(written["stages"]["stage 0 + 1"]["feature_silhouette"],
                                                         abs=1e-6)


def test_the_script_names_bad_stage_arguments(tmp_path, capsys):
    script = load_script()
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--stage", "initial", "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "'initial' is not NAME=MODEL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--stage", "a=x", "--stage", "a=y"])
    assert "repeated: ['a']" in capsys.readouterr().err
    missing = tmp_path / "outputs" / "no-model"
    with pytest.raises(ValueError, match=f"--stage fine-tuned={missing}: '{missing}' is neither"):
        script.main(["--stage", f"fine-tuned={missing}", "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # nothing written

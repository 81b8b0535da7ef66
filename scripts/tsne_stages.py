"""t-SNE of the held-out image features after each training stage, coloured by expression (the paper's Fig. 5), and
the silhouette score of each stage, so that "each stage groups the features" is a number.

For the models of the demo (`make demo`, which writes them under outputs/demo):

    python scripts/tsne_stages.py --stage initial=configs/demo_model.json --stage "stage 0"=outputs/demo/stage0/model \
        --stage "stage 0 + 1"=outputs/demo/stage1/model --stage fine-tuned=outputs/demo/expression-model \
        --dataset synthfaces --cache_dir outputs/demo/data --split test --output_dir docs/figures/tsne \
        --dataset_options '{"num_subjects": 28, "num_validation_subjects": 4, "num_test_subjects": 4,
                            "frames_per_activity": 16, "seed": 0}'

(the data options are the demo's, `MainJobOptions.data_options`, so the split is read from the demo's cache; the
stage folders are `model_dir` in outputs/demo/stage0/result.json and outputs/demo/stage1/result.json).

Each `--stage NAME=MODEL` is a saved model folder (a CLEF checkpoint, or a CLIP one in transformers' format) or a
`CLEFConfig` JSON file, meaning a freshly initialised model (torch seed `--seed`) with the package tokenizer, as a
training run from `--config_file` starts. Writes `tsne.png` (one panel per stage) and `silhouette.json` (per stage: the
silhouette of the features, cosine distance, and of the 2-D t-SNE embedding, euclidean; the number of images and the
split) to `--output_dir`, and prints a table. The work is done by `clef_hf.feature_tsne`.
"""

import argparse
import json
import os

import torch

from clef_hf.feature_tsne import (
    DEFAULT_PERPLEXITY,
    FeaturePanel,
    effective_perplexity,
    expression_images,
    image_features,
    load_stage_model,
    plot_feature_tsne,
    silhouette,
    tsne_embedding,
)
from clef_hf.training.arguments import DataArguments
from clef_hf.training.data import get_split, load_splits


def stage_argument(text: str) -> tuple[str, str]:
    """`NAME=MODEL` -> (NAME, MODEL); the name may hold spaces, the model path may hold '='."""
    name, separator, model = text.partition("=")
    if not separator or not name.strip() or not model.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME=MODEL (e.g. initial=configs/demo_model.json or "
            "fine-tuned=outputs/demo/expression-model)")
    return name.strip(), model.strip()


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", dest="stages", type=stage_argument, action="append", required=True,
                        metavar="NAME=MODEL", help="a stage's name and its model folder or CLEFConfig JSON; repeat "
                                                   "it for each stage, in the figure's order")
    parser.add_argument("--dataset", default="synthfaces",
                        help="a builder of dataset_builders or a folder written by DatasetDict.save_to_disk")
    parser.add_argument("--dataset_config", default=None, help="the builder configuration, e.g. fold1")
    parser.add_argument("--data_dir", default=None, help="your copy of the data set (builders that need one)")
    parser.add_argument("--dataset_options", default=None, help='builder options as JSON, e.g. \'{"num_subjects": 8}\'')
    parser.add_argument("--cache_dir", default=None, help="where `datasets` prepares the data")
    parser.add_argument("--split", default="test", help="the held-out split to embed")
    parser.add_argument("--max_images", type=int, default=None,
                        help="embed at most this many images, a subset stratified by expression (seed --seed)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the subset, of t-SNE and of a fresh model's initialisation")
    parser.add_argument("--perplexity", type=float, default=DEFAULT_PERPLEXITY,
                        help="t-SNE perplexity (clipped to (n - 1) / 3 for small n)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--output_dir", default="outputs/tsne")
    args = parser.parse_args(argv)
    names = [name for name, _ in args.stages]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        parser.error(f"--stage names must differ; repeated: {repeated}")
    if args.max_images is not None and args.max_images < 1:
        parser.error(f"--max_images must be a positive integer, got {args.max_images}")
    return args


def format_table(results: dict) -> str:
    """The printed table: one row per stage."""
    width = max(len("stage"), *(len(name) for name in results["stages"])) + 2
    lines = [f"{results['num_images']} images of the {results['split']!r} split of {results['dataset']}",
             f"{'stage':<{width}}{'silhouette (features, cosine)':>32}{'silhouette (t-SNE, euclidean)':>32}"]
    for name, stage in results["stages"].items():
        lines.append(f"{name:<{width}}{stage['feature_silhouette']:>32.3f}{stage['tsne_silhouette']:>32.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # Every model first, so that a wrong path fails before the data are prepared.
    models = {}
    for name, model_path in args.stages:
        try:
            models[name] = load_stage_model(model_path, seed=args.seed)
        except (ValueError, OSError) as error:
            raise ValueError(f"--stage {name}={model_path}: {error}") from error

    data = DataArguments(dataset=args.dataset, dataset_config=args.dataset_config, data_dir=args.data_dir,
                         dataset_options=args.dataset_options, cache_dir=args.cache_dir)
    split = get_split(load_splits(data), args.split, ("image", "expression"), "--split")
    images, labels, label_names = expression_images(split, args.max_images, args.seed)

    results = {"dataset": data.dataset_name, "split": args.split, "num_images": len(images), "seed": args.seed,
               "perplexity": effective_perplexity(len(images), args.perplexity), "label_names": label_names,
               "class_counts": {name: int((labels == i).sum()) for i, name in enumerate(label_names)}, "stages": {}}
    panels = []
    for name, model_path in args.stages:
        model, processor = models.pop(name)
        features = image_features(model.to(device), processor, images, batch_size=args.batch_size)
        embedding = tsne_embedding(features, seed=args.seed, perplexity=args.perplexity)
        stage = {"model": model_path, "split": args.split, "num_images": len(images),
                 "feature_silhouette": silhouette(features, labels, metric="cosine"),
                 "tsne_silhouette": silhouette(embedding, labels, metric="euclidean")}
        results["stages"][name] = stage
        panels.append(FeaturePanel(name, embedding, labels, label_names, stage["feature_silhouette"]))
        del model

    os.makedirs(args.output_dir, exist_ok=True)
    figure = plot_feature_tsne(panels)
    figure.suptitle(f"t-SNE of the image features, {results['split']} split ({results['num_images']} images); "
                    "silhouette of the features (cosine)", fontsize=10)
    figure.savefig(os.path.join(args.output_dir, "tsne.png"), dpi=150)
    with open(os.path.join(args.output_dir, "silhouette.json"), "w") as file:
        json.dump(results, file, indent=1)
    print(format_table(results))
    print(f"Figure and scores in {args.output_dir}")
    return results


if __name__ == "__main__":
    main()

"""A linear probe of saved models' frozen image features, next to the classical rows, on one split protocol.

Logistic regression (one per AU, or one over the expression classes) on each model's L2-normalised image features,
C chosen on the validation split, the test split scored once (`clef_hf.training.references.linear_probe`). If a
model's own text-driven head and the probe of its features score alike, what the model misses is not in its
features. For the demo's AU models (after `make demo`):

    python scripts/linear_probe.py --model outputs/demo/au-model --model outputs/demo/stage0/model --task au \\
        --cache_dir outputs/demo/data --output_file outputs/probe.json \\
        --dataset_options '{"num_subjects": 28, "num_validation_subjects": 4, "num_test_subjects": 4,
                            "frames_per_activity": 16, "seed": 0}'

Prints the mean test metric and the per-label test metrics of each model's probe, and writes them all (with the
validation figures and the chosen C) to `--output_file`.
"""

import argparse
import json
import os

from clef_hf.feature_tsne import load_stage_model
from clef_hf.training.arguments import DataArguments
from clef_hf.training.data import get_split, load_splits
from clef_hf.training.evaluation import BEST_METRIC
from clef_hf.training.references import PROBE_ROW, linear_probe
from dataset_builders import au_ids_of


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", dest="models", action="append", required=True,
                        help="a saved model folder or a CLEFConfig JSON (a fresh model); repeat for several")
    parser.add_argument("--task", choices=sorted(BEST_METRIC), default="au")
    parser.add_argument("--dataset", default="synthfaces")
    parser.add_argument("--dataset_config", default=None)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--dataset_options", default=None, help="builder options as JSON")
    parser.add_argument("--cache_dir", default=None)
    parser.add_argument("--output_file", default="outputs/probe.json")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_arguments(argv)
    data = DataArguments(dataset=args.dataset, dataset_config=args.dataset_config, data_dir=args.data_dir,
                         dataset_options=args.dataset_options, cache_dir=args.cache_dir)
    splits = load_splits(data)
    named = {name: get_split(splits, name, ("image", args.task), "--dataset") for name in ("train", "validation", "test")}
    label_ids = au_ids_of(named["train"]) if args.task == "au" else named["train"].features["expression"].names
    key = BEST_METRIC[args.task]
    results = {}
    for path in args.models:
        model, processor = load_stage_model(path)
        probe = linear_probe(model, processor, named["train"], named["validation"], named["test"], args.task,
                             label_ids)
        results[path] = probe
        test = probe["rows"][PROBE_ROW]["test"]
        per_label = test.get("per_label_f1") or dict(zip(label_ids, test.get("per_class_accuracy") or []))
        print(f"{path}: probe test {key} {test[key]:.3f} (C {probe['rows'][PROBE_ROW]['C']})",
              {label: round(float(value), 2) for label, value in per_label.items()})
    os.makedirs(os.path.dirname(os.path.abspath(args.output_file)), exist_ok=True)
    with open(args.output_file, "w") as handle:
        json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()

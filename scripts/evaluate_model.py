"""Evaluate a fine-tuned CLEF model on a split of a data set, with the label embeddings stored in the checkpoint.

    python scripts/evaluate_model.py --model_name_or_path outputs/bp4d-fold1/best --dataset bp4d --dataset_config fold1 \
        --data_dir /data/BP4D --split test --output_file outputs/bp4d-fold1/test_metrics.json

AUs: per-AU F1 and their mean, over the AUs the model and the data set share. Expressions: accuracy, per-class
accuracy and the confusion matrix, over the data set's classes. Runs under `accelerate launch` too.

(Not `scripts/evaluate.py`: Python puts a script's folder first on the import path, so a file of that name would
shadow the `evaluate` library, which the metrics load, for every script in this folder.)
"""

import json

from transformers import HfArgumentParser

from clef_hf.training import EvaluationArguments, evaluate_checkpoint


def main() -> None:
    (args,) = HfArgumentParser(EvaluationArguments).parse_args_into_dataclasses()
    results = evaluate_checkpoint(args)
    headline = "mean_f1" if results["task"] == "au" else "accuracy"
    print(json.dumps({key: value for key, value in results.items() if not isinstance(value, (list, dict))}, indent=1))
    print(f"{headline}: {results[headline]:.4f} on {results['num_images']} images")


if __name__ == "__main__":
    main()

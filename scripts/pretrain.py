"""CLEF stage 1: weakly-supervised pre-training on recorded activities (Eq. 1-2).

    accelerate launch scripts/pretrain.py --model_name_or_path PATH_TO_CLIP_OR_FARL --dataset bp4d \
        --dataset_config fold1 --data_dir /data/BP4D --output_dir outputs/pretrain

See `python scripts/pretrain.py --help` for every option; defaults are the paper's.
"""

from transformers import HfArgumentParser

from clef_hf.training import PretrainingArguments, pretrain


def main() -> None:
    (args,) = HfArgumentParser(PretrainingArguments).parse_args_into_dataclasses()
    pretrain(args)


if __name__ == "__main__":
    main()

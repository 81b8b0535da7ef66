"""CLEF stage 2: fine-tuning for AU detection or expression recognition (Eq. 3-6), evaluated after every epoch.

    accelerate launch scripts/finetune.py --model_name_or_path outputs/pretrain/model --dataset bp4d \
        --dataset_config fold1 --data_dir /data/BP4D --output_dir outputs/bp4d-fold1

The best epoch's model is saved, ready for the Hub, to OUTPUT_DIR/best (or --best_model_dir). Table 6's ablations:
--components I|IN|IND, and the initial weights (CLIP, FaRL, or a stage-1 CLEF checkpoint) via --model_name_or_path.
"""

from transformers import HfArgumentParser

from clef_hf.training import FineTuningArguments, finetune


def main() -> None:
    (args,) = HfArgumentParser(FineTuningArguments).parse_args_into_dataclasses()
    finetune(args)


if __name__ == "__main__":
    main()

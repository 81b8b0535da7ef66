"""Convert a FaRL (or any OpenAI-CLIP-format ViT) checkpoint into a CLEF model directory.

    python scripts/convert_farl.py --checkpoint FaRL-Base-Patch16-LAIONFace20M-ep64.pth --output outputs/farl \
        --tokenizer path/to/clip-tokenizer

The tokenizer directory holds CLIP's `vocab.json` and `merges.txt` (or a `tokenizer.json`); FaRL uses CLIP's
tokenizer. The result loads with `CLEFModel.from_pretrained(OUTPUT)` and starts fine-tuning via
`scripts/finetune.py --model_name_or_path OUTPUT`.
"""

import argparse
import logging

from transformers import CLIPTokenizer

from clef_hf.convert_openai_clip import convert_openai_clip, describe_clip_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="OpenAI-CLIP-format .pth/.pt/.bin or .safetensors file")
    parser.add_argument("--output", required=True, help="directory to write the CLEF model to")
    parser.add_argument("--tokenizer", help="directory with the CLIP tokenizer (vocab.json and merges.txt)")
    parser.add_argument("--vision_num_heads", type=int, help="only for heads that are not 64 wide")
    parser.add_argument("--text_num_heads", type=int, help="only for heads that are not 64 wide")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else None
    model = convert_openai_clip(
        args.checkpoint,
        args.output,
        tokenizer=tokenizer,
        vision_num_heads=args.vision_num_heads,
        text_num_heads=args.text_num_heads,
    )
    print(f"Detected architecture: {describe_clip_config(model.config)}")
    print(f"Saved the CLEF model to {args.output}.")
    if tokenizer is None:
        print(
            "Note: no --tokenizer was given, so no processor was written; the model cannot tokenize label prompts. "
            "Run again with --tokenizer DIR (CLIP's vocab.json and merges.txt), or add one later with "
            "`CLEFProcessor.from_tokenizer(CLIPTokenizer.from_pretrained(DIR), image_size).save_pretrained(OUTPUT)`."
        )


if __name__ == "__main__":
    main()

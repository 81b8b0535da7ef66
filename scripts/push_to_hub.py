"""Publish a trained CLEF model on the Hugging Face Hub with its model card, or write the folder that would be uploaded.

    # what would be uploaded, without network: the model files, the remote code and README.md (the model card)
    python scripts/push_to_hub.py --model outputs/bp4d-fold1/best --repo-id me/clef-bp4d-fold1 --dry-run outputs/upload

    # publish: the model files in one commit, then the model card
    python scripts/push_to_hub.py --model outputs/bp4d-fold1/best --repo-id me/clef-bp4d-fold1 --private

The model folder is what `scripts/finetune.py` saves as its best model (config, weights with the label embeddings,
processor, training_args.json, eval_results.json). Log in first with `hf auth login`, or pass --token.
The work is done by `clef_hf.hub`.
"""

import argparse
import sys

from clef_hf.hub import HubUnreachableError, ModelFolderError, prepare_upload_folder, push_to_hub, upload_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the trained model folder")
    parser.add_argument("--repo-id", required=True, help="the Hub repository, user/name or organisation/name")
    parser.add_argument("--dry-run", metavar="OUTDIR",
                        help="only write the folder that would be uploaded to OUTDIR (new or empty); no network")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--commit-message", help="message of the commit of the model files")
    parser.add_argument("--token", help="Hub token with write access (default: the saved login or HF_TOKEN)")
    parser.add_argument("--base-model", help="Hub id of the checkpoint that was fine-tuned (for the model card)")
    parser.add_argument("--license", default="apache-2.0", help="licence of the model card's metadata")
    parser.add_argument("--tag", action="append", default=[], dest="tags", help="an extra Hub tag (repeatable)")
    args = parser.parse_args(argv)

    card_options = {"base_model": args.base_model, "license": args.license, "extra_tags": args.tags}
    try:
        if args.dry_run:
            folder = prepare_upload_folder(args.model, args.dry_run, args.repo_id, **card_options)
            print(f"Dry run: wrote the folder that would be uploaded to {args.repo_id} to {folder}:")
            for name in upload_files(folder):
                print(f"  {name}")
            return 0
        url = push_to_hub(args.model, args.repo_id, private=args.private or None,
                          commit_message=args.commit_message, token=args.token, **card_options)
    except (HubUnreachableError, ModelFolderError, FileNotFoundError, FileExistsError, PermissionError,
            ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Published {args.model} with its model card: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

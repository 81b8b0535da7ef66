"""Relevancy maps of an AU model on held-out synthetic faces (the paper's Fig. 4), and where on the face they lie.

For the demo's AU model (`make demo` writes it to outputs/demo/au-model; its test subjects are S025-S028, indices
24-27 of seed 0):

    python scripts/relevancy_grid.py --model outputs/demo/au-model --output_dir docs/figures/relevancy

The faces are drawn by the synthfaces generator, which knows each face's pose, so the row between the upper face
(brows, eyes) and the lower face (mouth, chin) is known for every face (`face_halves_boundary`). Writes
`relevancy_grid.png` (`--faces` faces by `--labels`, each face the one showing most of the labels among those left)
and `face_halves.json`: per label, over the faces showing it, the mean share of the map above the boundary, the
image's share above it (a uniform map's), and `upper_fraction`, the fraction of faces whose map leans to the upper
face. A brow AU's maps should lean up (near 1), a mouth AU's down (near 0). As an occlusion check of the maps, it
also reports how much each label's similarity falls when the upper or the lower face is painted over
(`half_masking_drops`). The work is done by `clef_hf.explain`.
"""

import argparse
import json
import os

from clef_hf import CLEFModel, CLEFProcessor
from clef_hf.explain import (
    explain_labels,
    half_masking_drops,
    plot_relevancy_grid,
    summarize_face_shares,
    upper_face_shares,
)
from dataset_builders.synthfaces.generator import AU_NUMBERS, labelled_faces


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved CLEF AU model folder")
    parser.add_argument("--labels", nargs="+", default=["AU1", "AU2", "AU4", "AU12", "AU25"])
    parser.add_argument("--seed", type=int, default=0, help="the synthfaces seed the model was trained with")
    parser.add_argument("--subjects", type=int, nargs="+", default=[24, 25, 26, 27],
                        help="subject indices, held out from the model's training (the demo's test subjects)")
    parser.add_argument("--frames_per_activity", type=int, default=16, help="16: every test face of the demo")
    parser.add_argument("--faces", type=int, default=4, help="rows of the grid")
    parser.add_argument("--output_dir", default="docs/figures/relevancy")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model = CLEFModel.from_pretrained(args.model)
    processor = CLEFProcessor.from_pretrained(args.model)
    unknown = [label for label in args.labels if label not in model.config.label_ids]
    if unknown:
        raise SystemExit(f"--labels {unknown} are not labels of {args.model} ({list(model.config.label_ids)}).")
    size = model.config.vision_config.image_size
    faces = [(image, boundary, [f"AU{n}" for n, on in zip(AU_NUMBERS, frame.au) if on])
             for image, frame, boundary in labelled_faces(args.seed, args.subjects, args.frames_per_activity, size)]
    summary = summarize_face_shares(upper_face_shares(model, processor, faces, args.labels),
                                    half_masking_drops(model, processor, faces, args.labels))

    # The grid: faces showing most of the labels, one per subject and task first.
    ranked = sorted(range(len(faces)), key=lambda i: -len(set(faces[i][2]) & set(args.labels)))
    chosen = ranked[: args.faces]
    images = [faces[i][0] for i in chosen]
    figure = plot_relevancy_grid(images, [explain_labels(model, processor, image, args.labels) for image in images],
                                 column_titles=args.labels)
    os.makedirs(args.output_dir, exist_ok=True)
    figure.savefig(os.path.join(args.output_dir, "relevancy_grid.png"), dpi=80)
    record = {"model": args.model, "seed": args.seed, "subjects": args.subjects,
              "frames_per_activity": args.frames_per_activity, "labels": summary}
    with open(os.path.join(args.output_dir, "face_halves.json"), "w") as handle:
        json.dump(record, handle, indent=2)
    print(f"{'label':<8}{'faces':>6}{'share above':>13}{'area above':>12}{'upper fraction':>16}"
          f"{'drop, upper masked':>20}{'drop, lower masked':>20}")
    for label, row in summary.items():
        print(f"{label:<8}{row['faces']:>6}{row['mean_share_above']:>13.3f}{row['mean_area_above']:>12.3f}"
              f"{row['upper_fraction']:>16.2f}{row.get('drop_upper_masked', float('nan')):>20.3f}"
              f"{row.get('drop_lower_masked', float('nan')):>20.3f}")
    return record


if __name__ == "__main__":
    main()

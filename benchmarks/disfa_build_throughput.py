"""Build throughput of the DISFA builder from video, in frames per second, on a generated DISFA copy.

    HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python benchmarks/disfa_build_throughput.py --frames 100 --num_proc 1 2

The copy has two subjects of each standard part (fold1: 4 train, 2 test subjects), one left-camera MJPG video each,
whose frames are the astronaut photograph of scikit-image moving across a grey frame. Each measurement prepares the
data set into a fresh cache (scan, label parsing, video decoding, JPEG encoding or face cropping, Arrow writing) and
counts the stored rows.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
from PIL import Image
from skimage.data import astronaut

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' DISFA fixture writer
from disfa_fixture import write_disfa  # noqa: E402

from dataset_builders import build_dataset  # noqa: E402

SUBJECTS = ("SN001", "SN002", "SN013", "SN018", "SN003", "SN029")


def moving_face(subject: str, camera: str, frame: int, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    face_side = height * 3 // 4
    face = np.asarray(Image.fromarray(astronaut()).resize((face_side, face_side)))
    rgb = np.full((height, width, 3), 90, dtype=np.uint8)
    left = (frame * 3) % (width - face_side)
    rgb[height - face_side :, left : left + face_side] = face
    return rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="frames per video")
    parser.add_argument("--size", default="256x192", help="frame size, WIDTHxHEIGHT")
    parser.add_argument("--num_proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--crop_faces", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    size = tuple(int(side) for side in args.size.split("x"))
    datasets.disable_progress_bars()

    with tempfile.TemporaryDirectory() as workdir:
        data = write_disfa(Path(workdir) / "disfa", subjects=SUBJECTS, num_frames=args.frames, cameras=("left",),
                           size=size, pixels=moving_face)
        for num_proc in args.num_proc:
            for repeat in range(args.repeats):
                start = time.perf_counter()
                splits = build_dataset("disfa", "fold1", data_dir=str(data),
                                       cache_dir=str(Path(workdir) / f"cache-{num_proc}-{repeat}"),
                                       num_proc=num_proc if num_proc > 1 else None, crop_faces=args.crop_faces)
                seconds = time.perf_counter() - start
                rows = sum(len(split) for split in splits.values())
                print(f"num_proc={num_proc} size={args.size} crop_faces={args.crop_faces}: {rows} frames in "
                      f"{seconds:.2f} s = {rows / seconds:.0f} frames/s")


if __name__ == "__main__":
    main()

"""How fast does the FERPlus builder prepare a data set, with one process and with several?

Writes a fer2013.csv / fer2013new.csv pair of `--rows` random 48x48 images (80% Training, 10% PublicTest,
10% PrivateTest; votes with a clear majority, so every row is kept), then times `build_dataset("ferplus", ...)`
(scan, pixel parsing, PNG encoding, Arrow writing) into a fresh cache for each `--num-proc` value (repeat a value
to time it again).

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.ferplus_build_throughput --rows 8000 --num-proc 1 2 1 2
"""

import argparse
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402

from dataset_builders import build_dataset  # noqa: E402
from dataset_builders.ferplus import VOTE_COLUMNS  # noqa: E402


def write_fer_csvs(root: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    usages = np.array(["Training"] * 8 + ["PublicTest", "PrivateTest"])[np.arange(rows) * 10 // rows]
    fer = ["emotion,pixels,Usage"]
    votes = ["Usage,Image name," + ",".join(VOTE_COLUMNS)]
    for index, usage in enumerate(usages):
        pixels = " ".join(map(str, rng.integers(0, 256, 48 * 48)))
        fer.append(f"{index % 7},{pixels},{usage}")
        counts = [0] * len(VOTE_COLUMNS)
        counts[index % 8] = 8
        counts[(index + 3) % 8] = 2
        votes.append(f"{usage},fer{index:07d}.png," + ",".join(map(str, counts)))
    (root / "fer2013.csv").write_text("\n".join(fer) + "\n")
    (root / "fer2013new.csv").write_text("\n".join(votes) + "\n")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the `num_proc` workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    datasets.disable_progress_bars()
    logging.getLogger("dataset_builders").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ferplus"
        data.mkdir()
        write_fer_csvs(data, args.rows)
        print(f"fer2013.csv: {args.rows} rows, {(data / 'fer2013.csv').stat().st_size / 1e6:.1f} MB")
        for run, num_proc in enumerate(args.num_proc):
            start, cpu_start = time.perf_counter(), cpu_seconds()
            splits = build_dataset("ferplus", data_dir=str(data), cache_dir=f"{tmp}/cache{run}",
                                   num_proc=num_proc if num_proc > 1 else None)
            seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
            images = sum(len(split) for split in splits.values())
            print(f"num_proc={num_proc}: {images} images in {seconds:.2f} s = {images / seconds:.0f} images/s "
                  f"(CPU {cpu:.2f} s over all processes; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()

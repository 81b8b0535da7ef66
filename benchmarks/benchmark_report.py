"""What the benchmark scripts share: writing their measurements to a JSON file, and the `--threads` option of the
training benchmarks (imported as `benchmark_report`, from the scripts' own folder, which Python puts first on the import
path)."""

import argparse
import json
import os


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """`--threads`: torch's intra-op threads, 1 by default; apply it with [`use_threads`]."""
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a busy shared machine, under nice, two OpenMP "
                             "threads ran 20x slower than one, waiting for each other at every op; 0: torch's default)")


def use_threads(threads: int) -> None:
    """Set torch's intra-op threads to `threads`; 0 keeps torch's default."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def write_report(report: dict, path: str | None) -> None:
    """Write `report` as indented JSON to `path` (creating its folder) and say so; nothing if `path` is empty."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    print(f"wrote {path}")

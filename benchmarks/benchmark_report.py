"""What every benchmark script shares: writing its measurements to a JSON file (imported as `benchmark_report`, from
the scripts' own folder, which Python puts first on the import path)."""

import json
import os


def write_report(report: dict, path: str | None) -> None:
    """Write `report` as indented JSON to `path` (creating its folder) and say so; nothing if `path` is empty."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    print(f"wrote {path}")

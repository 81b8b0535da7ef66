"""What a builder found wrong with the data it read, and what it did about it.

Two kinds of trouble, handled differently:
  - *bad data* (an image that cannot be decoded, a label row that does not parse): `on_bad_data="raise"` stops with
    a `BadDataError` naming the file; `on_bad_data="skip"` skips the item and counts it.
  - *unmatched data* (a frame without labels, labels without a frame, a sample a split rule excludes): always counted,
    never raised, never dropped silently.

Every count keeps the first few paths as examples. Builders write one report file per generation job (jobs may run
in other processes with `num_proc`), and `read_data_report` merges them.
"""

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

ON_BAD_DATA = ("raise", "skip")
MAX_EXAMPLES = 20


class BadDataError(ValueError):
    """A file or row of a data set that cannot be read, with `on_bad_data="raise"`."""


class EmptySplitError(ValueError):
    """A split with no usable example, e.g. after every item was skipped as bad."""


class MissingDataError(FileNotFoundError):
    """A path a builder's documented layout requires is missing."""


@dataclass
class DataReport:
    """Counts of problems by kind, each with up to `MAX_EXAMPLES` example paths and details."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, path: str | Path, detail: str = "") -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(f"{path}: {detail}" if detail else str(path))

    def merge(self, other: "DataReport") -> "DataReport":
        for kind, count in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + count
            room = MAX_EXAMPLES - len(self.examples.setdefault(kind, []))
            self.examples[kind].extend(other.examples.get(kind, [])[: max(room, 0)])
        return self

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        if not self.counts:
            return "no problems found"
        lines = []
        for kind in sorted(self.counts):
            lines.append(f"{kind}: {self.counts[kind]} (e.g. {'; '.join(self.examples.get(kind, [])[:3])})")
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"counts": self.counts, "examples": self.examples}, indent=1))
        temporary.replace(path)

    @classmethod
    def read(cls, path: Path) -> "DataReport":
        content = json.loads(Path(path).read_text())
        return cls(counts=content["counts"], examples=content["examples"])


def check_on_bad_data(value: str) -> str:
    if value not in ON_BAD_DATA:
        raise ValueError(f"on_bad_data must be one of {ON_BAD_DATA}, got {value!r}.")
    return value


def bad_data(report: DataReport, on_bad_data: str, kind: str, path: str | Path, detail: str) -> None:
    """Stop on bad data (`on_bad_data="raise"`) or count it and go on (`"skip"`)."""
    if check_on_bad_data(on_bad_data) == "raise":
        raise BadDataError(
            f"{kind}: {path}: {detail}. Pass on_bad_data='skip' to skip such items and count them in the report."
        )
    report.add(kind, path, detail)


def require_paths(root: str | Path | None, relative_paths: list[str], builder_name: str, layout: str) -> Path:
    """Check that `root` and each of `relative_paths` under it exist; raise `MissingDataError` naming the first that
    does not, with the layout the builder expects."""
    if root is None:
        raise MissingDataError(
            f"The {builder_name} builder needs data_dir: the folder holding your copy of the data set.\n"
            f"Expected layout:\n{layout}"
        )
    root = Path(root).expanduser()
    for relative in ["", *relative_paths]:
        path = root / relative
        if not path.exists():
            raise MissingDataError(f"{builder_name}: missing {path}\nExpected layout under data_dir:\n{layout}")
    return root


def report_directory(cache_dir: str | Path) -> Path:
    """Where a builder's reports live: beside its prepared data (the cache folder is renamed into place at the end
    of preparation, so the reports cannot go inside it)."""
    cache_dir = Path(cache_dir)
    return cache_dir.with_name(cache_dir.name + ".reports")


def job_report_path(cache_dir: str | Path, split: str, shards: list) -> Path:
    """One report file per generation job, named by the shards it covers so that parallel jobs do not collide."""
    digest = hashlib.sha1(repr(shards).encode()).hexdigest()[:12]
    return report_directory(cache_dir) / f"{split}-{digest}.json"


def read_data_report(cache_dir: str | Path) -> DataReport:
    """Merge every report file a builder wrote for the prepared data in `cache_dir`."""
    merged = DataReport()
    directory = report_directory(cache_dir)
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            merged.merge(DataReport.read(path))
    return merged

"""`datasets` builders for facial behaviour: BP4D, BP4D+, DISFA, RAF-DB, AffectNet, FERPlus (bring your licensed
copy) and the synthetic faces the package ships as its default data. All fill one schema (`dataset_builders.schema`).

    from dataset_builders import build_dataset
    splits = build_dataset("bp4d", "fold1", data_dir="/data/BP4D", on_bad_data="skip", num_proc=8)
"""

import importlib
import logging
from pathlib import Path

import datasets
from datasets.fingerprint import Hasher

from .data_report import BadDataError, DataReport, EmptySplitError, MissingDataError, read_data_report
from .schema import au_ids_of

logger = logging.getLogger(__name__)

#: name -> "module:Class", imported on first use.
BUILDERS: dict[str, str] = {
    "bp4d": "dataset_builders.bp4d:BP4D",
    "bp4d_plus": "dataset_builders.bp4d:BP4DPlus",
    "disfa": "dataset_builders.disfa:DISFA",
    "raf_db": "dataset_builders.raf_db:RAFDB",
    "affectnet": "dataset_builders.affectnet:AffectNet",
    "ferplus": "dataset_builders.ferplus:FERPlus",
    "synthfaces": "dataset_builders.synthfaces:SynthFaces",
}


def builder_class(name: str) -> type[datasets.GeneratorBasedBuilder]:
    """The builder class registered under `name`."""
    if name not in BUILDERS:
        raise ValueError(f"Unknown data set {name!r}; choose one of {sorted(BUILDERS)}.")
    module_name, class_name = BUILDERS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_builder(name: str, config_name: str | None = None, data_dir: str | None = None,
                cache_dir: str | None = None, **config_kwargs) -> datasets.GeneratorBasedBuilder:
    """An instantiated builder. Its cache is keyed on the builders' source code too, so that a changed builder
    never serves stale prepared data."""
    cls = builder_class(name)
    return cls(config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, hash=_source_hash(),
               **config_kwargs)


def _source_hash() -> str:
    sources = sorted(Path(__file__).parent.rglob("*.py"))
    return Hasher.hash([path.read_bytes() for path in sources])


def build_dataset(name: str, config_name: str | None = None, data_dir: str | None = None,
                  cache_dir: str | None = None, return_report: bool = False, **kwargs):
    """Prepare (once; later calls read the cache) and load a data set as a `datasets.DatasetDict`.

    Args:
        name: one of `BUILDERS`.
        config_name: the builder config, e.g. `"fold1"` or `"pretrain"`; the builder's default if omitted.
        data_dir: the folder holding your copy of the data set (not needed for `"synthfaces"`).
        cache_dir: where prepared data is stored; `datasets`' default cache if omitted.
        return_report: also return the `DataReport` of problems found while preparing.
        kwargs: `num_proc` (parallel preparation) and builder options such as `on_bad_data`, `crop_faces`.

    Returns:
        The `DatasetDict`, or `(DatasetDict, DataReport)` with `return_report=True`.
    """
    num_proc = kwargs.pop("num_proc", None)
    builder = get_builder(name, config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, **kwargs)
    try:
        builder.download_and_prepare(num_proc=num_proc)
    except datasets.exceptions.DatasetGenerationError as error:
        # Surface our own errors (which name the bad file) rather than datasets' generic wrapper.
        if isinstance(error.__cause__, (BadDataError, MissingDataError)):
            raise error.__cause__ from None
        raise
    report = read_data_report(builder.cache_dir)
    empty = [split for split, info in builder.info.splits.items() if info.num_examples == 0]
    if empty:
        raise EmptySplitError(
            f"{name}/{builder.config.name}: split(s) {empty} hold no examples. What the builder found:\n"
            f"{report.summary()}"
        )
    splits = builder.as_dataset()
    if report:
        logger.warning("%s/%s: problems found while preparing:\n%s", name, builder.config.name, report.summary())
    return (splits, report) if return_report else splits


__all__ = [
    "BUILDERS",
    "BadDataError",
    "DataReport",
    "EmptySplitError",
    "MissingDataError",
    "au_ids_of",
    "build_dataset",
    "builder_class",
    "get_builder",
]

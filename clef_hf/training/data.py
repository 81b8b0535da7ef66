"""Data for the training loops: loading a split, the epoch-seeded sampler that makes resumption exact, the collator
that turns rows into processor-normalised pixels and labels, and the class weights of Eq. 4-5."""

import os

import datasets
import torch
from torch.utils.data import Sampler

from .arguments import DataArguments


def load_splits(args: DataArguments) -> datasets.DatasetDict:
    """The data set named by `args.dataset`: a folder written by `save_to_disk`, or a builder of `dataset_builders`
    prepared (once, then cached) under `args.cache_dir`."""
    if os.path.isdir(args.dataset):
        splits = datasets.load_from_disk(args.dataset)
        if isinstance(splits, datasets.Dataset):
            raise ValueError(
                f"{args.dataset} holds a single Dataset; save a DatasetDict with named splits (e.g. train, test)."
            )
        return splits
    from dataset_builders import BUILDERS, build_dataset

    if args.dataset not in BUILDERS:
        raise ValueError(
            f"--dataset {args.dataset!r} is neither a folder nor a builder; builders: {sorted(BUILDERS)}."
        )
    return build_dataset(
        args.dataset, args.dataset_config, data_dir=args.data_dir, cache_dir=args.cache_dir, num_proc=args.num_proc,
        **args.builder_options,
    )


def get_split(splits: datasets.DatasetDict, name: str, required_columns: tuple[str, ...], argument: str):
    """`splits[name]`, checked to exist, to be non-empty and to have `required_columns`."""
    if name not in splits:
        raise ValueError(f"{argument} {name!r} is not a split of the data set; it has {sorted(splits)}.")
    split = splits[name]
    missing = [column for column in required_columns if column not in split.column_names]
    if missing:
        raise ValueError(f"The {name!r} split has no column {missing} (it has {split.column_names}).")
    if len(split) == 0:
        raise ValueError(f"The {name!r} split is empty.")
    return split


class EpochSeededSampler(Sampler[int]):
    """A random order of `num_samples` indices that depends only on `seed` and the epoch set by `use_epoch`.

    A resumed run therefore sees exactly the order the interrupted run saw, and skips the batches it had consumed.
    (The method is not called `set_epoch` on purpose: Accelerate calls `set_epoch` on samplers with its own count of
    iterations, which restarts at 0 in a resumed run.)
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def epoch_batches(accelerator, dataloader, sampler: EpochSeededSampler, epoch: int, batches_done: int):
    """The batches of `epoch` that a run has not consumed yet: all of them, or, when it resumes mid-epoch, those after
    the first `batches_done` (in the same order, since the sampler's order depends only on the seed and epoch)."""
    sampler.use_epoch(epoch)
    if batches_done:
        return accelerator.skip_first_batches(dataloader, batches_done)
    return dataloader


class FacialBehaviorCollator:
    """Turns rows of a facial-behaviour split into a batch.

    Returns a dict with `pixel_values` (batch, 3, size, size), processed exactly as at inference by the processor's
    image processor (augmentation happens later, on the batch, on the device), `index` (batch,) the rows' dataset
    indices, and per requested label column:
      - `au`: (batch, num_aus) int64, 1 / 0 / -1 (unknown);
      - `expression`: (batch,) int64 class indices;
      - a string column named in `categories` (`activity`, `subject`): (batch,) int64 ids, the positions of the
        rows' values in `categories[column]`.
    """

    def __init__(
        self, image_processor, label_columns: tuple[str, ...] = (), categories: dict[str, list[str]] | None = None
    ):
        self.image_processor = image_processor
        self.label_columns = label_columns
        self.category_index = {
            column: {value: i for i, value in enumerate(values)} for column, values in (categories or {}).items()
        }

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        images = [row["image"].convert("RGB") for row in rows]
        batch = {"pixel_values": self.image_processor(images=images, return_tensors="pt")["pixel_values"]}
        for column in self.label_columns:
            values = [row[column] for row in rows]
            if column in self.category_index:
                index = self.category_index[column]
                unknown = sorted({value for value in values if value not in index})
                if unknown:
                    raise ValueError(f"{column} {unknown} is not among the training split's {sorted(index)}.")
                values = [index[value] for value in values]
            batch[column] = torch.tensor(values, dtype=torch.long)
        return batch


def activities_of(split: datasets.Dataset) -> tuple[list[str], list[str]]:
    """The split's activity ids, sorted, and the description of each (the first one met)."""
    descriptions: dict[str, str] = {}
    columns = split.select_columns(["activity", "activity_description"])
    for activity, description in zip(columns["activity"], columns["activity_description"]):
        descriptions.setdefault(activity, description)
    activities = sorted(descriptions)
    return activities, [descriptions[activity] for activity in activities]


def class_weights_from_split(split: datasets.Dataset, task: str, num_labels: int) -> list[float]:
    """The per-label weights w_c of Eq. 4-5: inverse occurrence rate in the training split, normalised to sum to the
    number of labels (so that uniform labels get weight 1).

    For AUs the rate of AU c is its share of positives among the frames where it is known (-1 is ignored); for
    expressions it is the class's share of the frames. A label that never occurs is treated as occurring once, so its
    weight is large but finite.
    """
    if task == "au":
        labels = torch.tensor(list(split.select_columns(["au"])["au"]), dtype=torch.float32)
        if labels.ndim != 2 or labels.shape[1] != num_labels:
            raise ValueError(f"The au column has rows of {tuple(labels.shape[1:])} labels; the model has {num_labels}.")
        known = (labels >= 0).float()
        positives = (labels == 1).float().sum(0)
        rate = positives.clamp(min=1) / known.sum(0).clamp(min=1)
    elif task == "expression":
        labels = torch.tensor(list(split.select_columns(["expression"])["expression"]), dtype=torch.long)
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
            raise ValueError(f"The expression column holds classes outside 0..{num_labels - 1}.")
        rate = torch.bincount(labels, minlength=num_labels).float().clamp(min=1) / max(1, len(labels))
    else:
        raise ValueError(f"task must be 'au' or 'expression', got {task!r}.")
    weights = 1.0 / rate
    return (weights * num_labels / weights.sum()).tolist()


__all__ = [
    "EpochSeededSampler",
    "epoch_batches",
    "FacialBehaviorCollator",
    "activities_of",
    "class_weights_from_split",
    "get_split",
    "load_splits",
]

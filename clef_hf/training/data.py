"""Data for the training loops: loading a split (a builder, a `save_to_disk` folder or a captioned image folder), the
epoch-seeded sampler that makes resumption exact, the collators that turn rows into processor-normalised pixels and
labels or caption tokens, and the class weights of Eq. 4-5."""

import os

import datasets
import numpy as np
import torch
from torch.utils.data import Sampler

from .arguments import DataArguments


#: Label columns that hold floats (the others are integer labels or category ids).
FLOAT_LABEL_COLUMNS = ("au_intensity",)
#: The column [`with_pixel_values`] writes: the image processor's output for the row's image.
PIXEL_VALUES = "pixel_values"
#: Files that mark a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`.
SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")
#: Metadata files of Hugging Face's imagefolder layout (one row per image, its `file_name` and other fields).
IMAGE_FOLDER_METADATA = ("metadata.jsonl", "metadata.csv")


def image_folder_metadata(folder: str) -> list[str]:
    """The imagefolder metadata files in `folder` itself or in its direct subfolders (one per split, e.g. train/)."""
    candidates = [folder] + sorted(
        os.path.join(folder, entry) for entry in os.listdir(folder) if os.path.isdir(os.path.join(folder, entry))
    )
    return [os.path.join(directory, name) for directory in candidates for name in IMAGE_FOLDER_METADATA
            if os.path.isfile(os.path.join(directory, name))]


def load_splits(args: DataArguments) -> datasets.DatasetDict:
    """The data set named by `args.dataset`:
      - a folder written by `save_to_disk`;
      - an image folder in Hugging Face's imagefolder layout: images with a `metadata.jsonl` (or `.csv`) whose rows
        hold each image's `file_name` and further fields such as `caption`, at the top (one `train` split) or in one
        subfolder per split (`train/`, `test/`); read with `datasets.load_dataset("imagefolder", data_dir=...)`;
      - or a builder of `dataset_builders`, prepared (once, then cached) under `args.cache_dir`.
    """
    if os.path.isdir(args.dataset):
        if any(os.path.isfile(os.path.join(args.dataset, name)) for name in SAVED_DATASET_FILES):
            splits = datasets.load_from_disk(args.dataset)
            if isinstance(splits, datasets.Dataset):
                raise ValueError(
                    f"{args.dataset} holds a single Dataset; save a DatasetDict with named splits (e.g. train, test)."
                )
            return splits
        if image_folder_metadata(args.dataset):
            return datasets.load_dataset(
                "imagefolder", data_dir=args.dataset, cache_dir=args.cache_dir,
                num_proc=args.num_proc if args.num_proc > 1 else None,
            )
        raise ValueError(
            f"--dataset {args.dataset} is a folder but neither a saved data set (no "
            f"{' or '.join(SAVED_DATASET_FILES)}) nor an image folder with a {' or '.join(IMAGE_FOLDER_METADATA)} "
            "(in it or in a split subfolder)."
        )
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


def _process_images(batch: dict, image_processor, image_column: str) -> dict:
    images = [image.convert("RGB") for image in batch[image_column]]
    return {PIXEL_VALUES: image_processor(images=images, return_tensors="np")["pixel_values"].astype(np.float32)}


def with_pixel_values(split: datasets.Dataset, image_processor, image_column: str = "image",
                      num_proc: int | None = None) -> datasets.Dataset:
    """The split with its images run through the image processor once: the image column is replaced by a
    `pixel_values` column of shape (3, size, size), float32, exactly what the collators would compute from each image,
    and the split is formatted so that rows give it as a numpy array (other columns stay as they are).

    `datasets.Dataset.map` does the work and caches the result on disk beside the split's own files, keyed by the
    split's fingerprint and the processor's settings, so runs that read the same split with the same processor (the
    demo's eighteen stage-2 rows) process it once. The collators take rows of either kind.
    """
    if image_column not in split.column_names:
        raise ValueError(f"The split has no image column {image_column!r} to process (it has {split.column_names}).")
    if len(split) == 0:
        raise ValueError("The split is empty: there are no images to process.")
    first = _process_images(split[:1], image_processor, image_column)[PIXEL_VALUES]
    features = split.features.copy()
    del features[image_column]
    features[PIXEL_VALUES] = datasets.Array3D(shape=tuple(first.shape[1:]), dtype="float32")
    processed = split.map(
        _process_images, batched=True, batch_size=256, remove_columns=[image_column], features=features,
        fn_kwargs={"image_processor": image_processor, "image_column": image_column},
        num_proc=num_proc if num_proc and num_proc > 1 else None, desc="processing the images once",
    )
    return processed.with_format("numpy", columns=[PIXEL_VALUES], output_all_columns=True)


def _pixel_values(rows: list[dict], image_processor, image_column: str = "image") -> torch.Tensor:
    """(batch, 3, size, size) pixels of the rows: stacked from [`with_pixel_values`]'s column, or processed now."""
    if PIXEL_VALUES in rows[0]:
        return torch.from_numpy(np.stack([row[PIXEL_VALUES] for row in rows]))
    images = [row[image_column].convert("RGB") for row in rows]
    return image_processor(images=images, return_tensors="pt")["pixel_values"]


class FacialBehaviorCollator:
    """Turns rows of a facial-behaviour split into a batch.

    Returns a dict with `pixel_values` (batch, 3, size, size), processed exactly as at inference by the processor's
    image processor (augmentation happens later, on the batch, on the device), `index` (batch,) the rows' dataset
    indices, and per requested label column:
      - `au`: (batch, num_aus) int64, 1 / 0 / -1 (unknown);
      - `expression`: (batch,) int64 class indices;
      - `au_intensity`: (batch, num_aus) float32 intensities 0-5, -1 unknown;
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
        batch = {"pixel_values": _pixel_values(rows, self.image_processor)}
        for column in self.label_columns:
            values = [row[column] for row in rows]
            if column in self.category_index:
                index = self.category_index[column]
                unknown = sorted({value for value in values if value not in index})
                if unknown:
                    raise ValueError(f"{column} {unknown} is not among the training split's {sorted(index)}.")
                values = [index[value] for value in values]
            dtype = torch.float32 if column in FLOAT_LABEL_COLUMNS else torch.long
            batch[column] = torch.tensor(values, dtype=dtype)
        return batch


class ImageCaptionCollator:
    """Turns rows of an image-caption split into a batch for stage 0.

    Returns a dict with `pixel_values` (batch, 3, size, size), processed as at inference by the processor's image
    processor, and the captions tokenised: `input_ids` and `attention_mask` (batch, length), padded to the longest
    caption of the batch and truncated to `max_length` tokens.
    """

    def __init__(self, image_processor, tokenizer, caption_column: str = "caption", max_length: int = 77):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.caption_column = caption_column
        self.max_length = max_length

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        captions = [row[self.caption_column] for row in rows]
        tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        return {
            "pixel_values": _pixel_values(rows, self.image_processor),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
        }


def check_captions(split: datasets.Dataset, column: str, split_name: str) -> None:
    """Raise a ValueError naming the split and column if a caption is missing, not a string, or blank.

    Reads the caption column alone (no image is decoded).
    """
    bad = [index for index, caption in enumerate(split.select_columns([column])[column])
           if not isinstance(caption, str) or not caption.strip()]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        raise ValueError(
            f"The {split_name!r} split has {len(bad)} of {len(split)} rows without a caption in column {column!r} "
            f"(missing, empty or not a string; rows {shown}). Stage 0 (image_text) pairs every image with its "
            f"caption: fill them in or filter those rows out."
        )


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
    "ImageCaptionCollator",
    "activities_of",
    "check_captions",
    "with_pixel_values",
    "class_weights_from_split",
    "get_split",
    "image_folder_metadata",
    "load_splits",
]

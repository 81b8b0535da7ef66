"""Crash-safe checkpoints for the training loops.

A training state (Accelerate's `save_state`: weights, optimizer, scheduler, random states; plus `loop_state.json`:
step, epoch, batch within the epoch, best metric) is written into a temporary folder and renamed into place only
when complete, so a crash mid-save leaves the previous checkpoint usable and never a half-written one under a valid
name. Trained models are saved the same way: into a temporary sibling folder, then swapped in.

Folders only ever disappear by an atomic rename first (`step-N` -> `.old-step-N`, then removed): a process killed
while deleting a pruned or replaced checkpoint leaves a `.old-*` folder, never a half-deleted `step-N` that still
holds its `loop_state.json` and so would look complete. The next save removes what a killed save left (`.tmp-*`,
`.old-*`). `tests/test_hardening_kill.py` crashes a save at each of its file operations and SIGKILLs real runs.
"""

import json
import os
import re
import shutil
from collections.abc import Callable

from accelerate import Accelerator

from .tracking import METRICS_FILE

CHECKPOINTS_DIR = "checkpoints"
LOOP_STATE_FILE = "loop_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(output_dir: str) -> list[str]:
    """Complete checkpoints under `output_dir/checkpoints`, oldest first (unfinished temporary folders are skipped)."""
    root = os.path.join(output_dir, CHECKPOINTS_DIR)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _STEP_DIR.match(name)
        if match and os.path.isfile(os.path.join(root, name, LOOP_STATE_FILE)):
            found.append((int(match.group(1)), os.path.join(root, name)))
    return [path for _, path in sorted(found)]


def resolve_checkpoint(output_dir: str, resume_from_checkpoint: str | None) -> str | None:
    """The checkpoint folder to resume from: `latest` is the newest complete one (None if there is none yet, so the
    same command starts or resumes a run), anything else must be a complete checkpoint folder."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        found = checkpoint_dirs(output_dir)
        return found[-1] if found else None
    if not os.path.isfile(os.path.join(resume_from_checkpoint, LOOP_STATE_FILE)):
        raise ValueError(
            f"--resume_from_checkpoint {resume_from_checkpoint} is not a complete checkpoint (no {LOOP_STATE_FILE}); "
            f"complete ones: {checkpoint_dirs(output_dir) or 'none'}."
        )
    return resume_from_checkpoint


def save_checkpoint(accelerator: Accelerator, output_dir: str, loop_state: dict, total_limit: int) -> str:
    """Write the training state of step `loop_state["global_step"]` atomically and keep the newest `total_limit`.

    Every process must call this (Accelerate saves each process's random state).
    """
    root = os.path.join(output_dir, CHECKPOINTS_DIR)
    final = os.path.join(root, f"step-{loop_state['global_step']}")
    temporary = os.path.join(root, f".tmp-step-{loop_state['global_step']}")
    if accelerator.is_main_process:
        _remove_leftovers(root)  # of saves killed part way, whichever step they were writing
        os.makedirs(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # Written last, under a temporary name: its presence marks the state as complete. It records how much of the
        # metrics log precedes this state, for `MetricsLog` to cut it there on resuming.
        state = dict(loop_state)
        metrics = os.path.join(output_dir, METRICS_FILE)
        if os.path.isfile(metrics):
            state["metrics_bytes"] = os.path.getsize(metrics)
        with open(os.path.join(temporary, LOOP_STATE_FILE + ".tmp"), "w") as file:
            json.dump(state, file, indent=1)
        os.replace(os.path.join(temporary, LOOP_STATE_FILE + ".tmp"), os.path.join(temporary, LOOP_STATE_FILE))
        if os.path.exists(final):  # the same step saved again (the run's final state): swap, never delete in place
            _discard(final)
        os.replace(temporary, final)
        for old in checkpoint_dirs(output_dir)[:-total_limit]:
            _discard(old)
    accelerator.wait_for_everyone()
    return final


def _discard(folder: str) -> None:
    """Remove a checkpoint folder so that it stops counting as one at once: rename it to `.old-<name>`, then delete
    it. A deletion cut short leaves the `.old-` folder (removed by the next save), never a part of `folder`."""
    old = os.path.join(os.path.dirname(folder), f".old-{os.path.basename(folder)}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(root: str) -> None:
    """Delete the `.tmp-*` and `.old-*` folders that saves killed part way left under `root`."""
    if os.path.isdir(root):
        for name in os.listdir(root):
            if name.startswith((".tmp-", ".old-")):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def load_checkpoint(accelerator: Accelerator, checkpoint: str) -> dict:
    """Restore the state saved by [`save_checkpoint`] and return its loop state."""
    accelerator.load_state(checkpoint)
    with open(os.path.join(checkpoint, LOOP_STATE_FILE)) as file:
        return json.load(file)


def save_directory_atomically(directory: str, write: Callable[[str], None]) -> None:
    """Call `write(folder)` on a temporary sibling of `directory`, then swap it in: a crash leaves either the old or
    the new folder, never a mixture."""
    directory = os.path.normpath(directory)
    parent = os.path.dirname(directory) or "."
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(parent, f".tmp-{os.path.basename(directory)}")
    previous = os.path.join(parent, f".old-{os.path.basename(directory)}")
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    write(temporary)
    if os.path.exists(directory):
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(directory, previous)
    os.replace(temporary, directory)
    shutil.rmtree(previous, ignore_errors=True)


__all__ = ["checkpoint_dirs", "load_checkpoint", "resolve_checkpoint", "save_checkpoint", "save_directory_atomically"]

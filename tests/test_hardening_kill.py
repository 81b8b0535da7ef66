"""Hardening: no lost work under kill -9, and atomic checkpoints.

Two complementary checks:

1. `test_a_crash_at_any_point_of_a_save_leaves_only_complete_checkpoints` (in process, deterministic): every file
   system operation of `save_checkpoint` (folder creation, Accelerate's `save_state`, the `loop_state.json` write,
   each rename and each folder removal) is made to "crash" in turn, including the worst case of a removal that dies
   half way having deleted everything but `loop_state.json`. After each crash `latest` must be a complete
   checkpoint, every checkpoint `checkpoint_dirs` lists must be complete, and the next save must succeed and leave
   no temporary folder behind. Both kinds of save are covered: a new step, and the re-save of an existing step (the
   run's final save, when the last step was already checkpointed).
2. `test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_weights` (real processes): `scripts/finetune.py`
   with `--checkpointing_steps 1` is SIGKILLed at seeded random points, at least once while a checkpoint is being
   written (the process is stopped with SIGSTOP when a `.tmp-step-*` folder appears, and killed only if the folder
   is still there, so the kill provably lands inside `save_checkpoint`), and one resumed run is killed again. After
   every kill each listed checkpoint is complete; the final `--resume_from_checkpoint latest` run ends with exactly
   the weights (`torch.equal` on every tensor), best model, history and metrics log of an uninterrupted run.

Two trials run by default (about a minute on 2 CPU cores); `CLEF_KILL_TRIALS=8` runs more, with other seeds.
Existing related tests: `tests/test_training.py::test_killed_run_resumes_to_the_same_final_weights` (one kill after
the first checkpoint), `::test_latest_ignores_a_checkpoint_whose_save_did_not_finish`,
`::test_resuming_mid_epoch_from_a_checkpoint_gives_the_uninterrupted_weights`.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clef_hf.training import checkpointing
from clef_hf.training.checkpointing import CHECKPOINTS_DIR, LOOP_STATE_FILE, checkpoint_dirs, resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NUM_TRIALS = int(os.environ.get("CLEF_KILL_TRIALS", "2"))


def complete(checkpoint: str, expected_files: set[str]) -> str | None:
    """What is wrong with a checkpoint folder, or None if it is complete."""
    files = set(os.listdir(checkpoint))
    if files != expected_files:
        return f"{checkpoint}: files {sorted(files)}, expected {sorted(expected_files)}"
    try:
        state = json.loads(Path(checkpoint, LOOP_STATE_FILE).read_text())
    except ValueError as error:
        return f"{checkpoint}: unreadable {LOOP_STATE_FILE}: {error}"
    if f"step-{state['global_step']}" != os.path.basename(checkpoint):
        return f"{checkpoint}: holds step {state['global_step']}"
    try:
        load_file(os.path.join(checkpoint, "model.safetensors"))
    except Exception as error:  # noqa: BLE001 - any failure to read is the finding
        return f"{checkpoint}: unreadable model.safetensors: {error}"
    return None


def assert_only_complete_checkpoints(output_dir, expected_files: set[str]) -> str | None:
    """Every checkpoint `checkpoint_dirs` lists is complete; returns `latest`."""
    for checkpoint in checkpoint_dirs(str(output_dir)):
        problem = complete(checkpoint, expected_files)
        assert problem is None, problem
    latest = resolve_checkpoint(str(output_dir), "latest")
    assert latest is None or latest == checkpoint_dirs(str(output_dir))[-1]
    return latest


def leftovers(output_dir) -> list[str]:
    root = Path(output_dir, CHECKPOINTS_DIR)
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".")) if root.is_dir() else []


# ---------------------------------------------------------------- 1. crash injection inside save_checkpoint


class Crash(BaseException):
    """Stands for SIGKILL: a BaseException, so that no `except Exception` in the code under test swallows it."""


class CrashInjector:
    """Wraps the file system operations of a save; operation number `crash_at` crashes (None: count them)."""

    def __init__(self, monkeypatch, accelerator, crash_at: int | None, half_done: bool):
        self.count, self.crash_at, self.half_done, self.log = 0, crash_at, half_done, []
        real_rmtree, real_replace, real_makedirs = shutil.rmtree, os.replace, os.makedirs
        real_save_state, real_dump = accelerator.save_state, json.dump

        def hit(name: str) -> bool:
            self.log.append(name)
            self.count += 1
            return self.count - 1 == self.crash_at

        def rmtree(path, *args, **kwargs):
            if os.path.isdir(path) and hit(f"rmtree {os.path.basename(path)}"):
                if self.half_done:  # the worst a killed removal can leave: everything gone but the marker
                    for name in os.listdir(path):
                        if name != LOOP_STATE_FILE:
                            os.remove(os.path.join(path, name))
                raise Crash
            return real_rmtree(path, *args, **kwargs)

        def replace(source, target, *args, **kwargs):
            if hit(f"replace {os.path.basename(source)} -> {os.path.basename(target)}"):
                raise Crash
            return real_replace(source, target, *args, **kwargs)

        def makedirs(path, *args, **kwargs):
            if hit(f"makedirs {os.path.basename(path)}"):
                raise Crash
            return real_makedirs(path, *args, **kwargs)

        def save_state(directory, *args, **kwargs):
            if hit("save_state"):
                if self.half_done:  # some files written, not all
                    real_save_state(directory, *args, **kwargs)
                    os.remove(os.path.join(directory, "optimizer.bin"))
                raise Crash
            return real_save_state(directory, *args, **kwargs)

        def dump(value, file, *args, **kwargs):
            if hit("json.dump"):
                if self.half_done:  # a torn write
                    file.write(json.dumps(value)[:10])
                raise Crash
            return real_dump(value, file, *args, **kwargs)

        monkeypatch.setattr(shutil, "rmtree", rmtree)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "makedirs", makedirs)
        monkeypatch.setattr(accelerator, "save_state", save_state)
        monkeypatch.setattr(json, "dump", dump)


@pytest.fixture
def accelerator_parts(fresh_accelerator_state):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return accelerator, model, optimizer


def train_step(model, optimizer) -> None:
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("resave", [False, True], ids=["new-step", "re-save-of-the-same-step"])
def test_a_crash_at_any_point_of_a_save_leaves_only_complete_checkpoints(tmp_path, monkeypatch, accelerator_parts,
                                                                         resave):
    accelerator, model, optimizer = accelerator_parts
    limit = 2

    def prepare(output_dir) -> None:
        for step in (1, 2, 3):
            train_step(model, optimizer)
            checkpointing.save_checkpoint(accelerator, str(output_dir), {"global_step": step}, limit)

    reference = tmp_path / "reference"
    prepare(reference)
    expected_files = set(os.listdir(checkpoint_dirs(str(reference))[-1]))
    assert {"model.safetensors", "optimizer.bin", LOOP_STATE_FILE} <= expected_files
    crashed_step = 3 if resave else 4

    # Count the operations of a clean save.
    with monkeypatch.context() as patch:
        counter = CrashInjector(patch, accelerator, None, False)
        checkpointing.save_checkpoint(accelerator, str(reference), {"global_step": crashed_step, "final": True}, limit)
    assert counter.count >= 4, counter.log

    cases = [(k, half) for k in range(counter.count) for half in (False, True)]
    for case, (crash_at, half_done) in enumerate(cases):
        output_dir = tmp_path / f"case{case}"
        prepare(output_dir)
        with monkeypatch.context() as patch:
            injector = CrashInjector(patch, accelerator, crash_at, half_done)
            with pytest.raises(Crash):
                checkpointing.save_checkpoint(accelerator, str(output_dir),
                                              {"global_step": crashed_step, "final": True}, limit)
        where = f"crash at {injector.log[-1]!r} (half done: {half_done}); operations {injector.log}"
        latest = assert_only_complete_checkpoints(output_dir, expected_files)
        assert latest is not None, where
        # Work is never lost beyond the save that crashed (a re-save may fall back to the step before, which is
        # complete; resuming from it recomputes the same step).
        assert int(latest.rsplit("-", 1)[1]) >= 2, where
        # The next save works, and cleans up what the crash left.
        checkpointing.save_checkpoint(accelerator, str(output_dir), {"global_step": crashed_step, "final": True}, limit)
        latest = assert_only_complete_checkpoints(output_dir, expected_files)
        assert os.path.basename(latest) == f"step-{crashed_step}", where
        assert json.loads(Path(latest, LOOP_STATE_FILE).read_text())["final"], where
        assert leftovers(output_dir) == [], where
        assert len(checkpoint_dirs(str(output_dir))) == limit, where


class _CrashingFile:
    """A file whose writes crash (after `open` truncated it, if it was opened for writing)."""

    def __init__(self, file):
        self.file = file

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, text):
        raise Crash

    writelines = write


def test_a_crash_while_resuming_keeps_the_metrics_log(tmp_path, monkeypatch, fresh_accelerator_state):
    """Resuming rewrites metrics.jsonl without the lines logged after the checkpoint. It used to truncate the file in
    place, so a run killed right then lost the whole history; a last line cut short by a crash made every later
    resume fail with a JSONDecodeError; and lines logged after the checkpoint at its own step (the evaluation at the
    end of an epoch) were kept, then logged again by the resumed run (found by the kill trials below)."""
    from accelerate import Accelerator

    from clef_hf.training import tracking

    accelerator = Accelerator(cpu=True)
    path = tmp_path / tracking.METRICS_FILE
    lines = [json.dumps({"step": step, "train/loss": 1.0 / step}) + "\n" for step in range(1, 7)]
    path.write_text("".join(lines))
    with monkeypatch.context() as patch:
        real_open = open
        patch.setattr(tracking, "open", lambda file, mode="r", *a, **k: _CrashingFile(real_open(file, mode, *a, **k))
                      if "w" in mode else real_open(file, mode, *a, **k), raising=False)
        with pytest.raises(Crash):
            tracking.MetricsLog(accelerator, str(tmp_path), resume_step=4)
    assert path.read_text() == "".join(lines)  # nothing lost

    path.write_text("".join(lines) + '{"step": 7, "train/lo')  # the append a crash cut short
    log = tracking.MetricsLog(accelerator, str(tmp_path), resume_step=4)
    assert path.read_text() == "".join(lines[:4])
    log.log({"train/loss": 0.5}, 5)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]

    # The checkpoint of step 4 was saved after the first 4 lines; the evaluation at step 4 was logged after it.
    path.write_text("".join(lines[:4]))
    checkpoint = tmp_path / CHECKPOINTS_DIR / "step-4"
    checkpointing.save_checkpoint(accelerator, str(tmp_path), {"global_step": 4}, 2)
    assert json.loads((checkpoint / LOOP_STATE_FILE).read_text())["metrics_bytes"] == len("".join(lines[:4]))
    with open(path, "a") as file:
        file.write(json.dumps({"step": 4, "eval/accuracy": 0.5}) + "\n" + lines[4])
    tracking.MetricsLog(accelerator, str(tmp_path), resume_step=4)
    assert path.read_text() == "".join(lines[:4])


# ---------------------------------------------------------------- 2. real kill -9 of the fine-tuning script

#: 64 training images / batch 4 = 16 steps per epoch, 2 epochs; a checkpoint every step.
STEPS = 32
ARGS = ["--task", "expression", "--per_device_train_batch_size", "4", "--num_train_epochs", "2",
        "--learning_rate", "1e-3", "--checkpointing_steps", "1", "--checkpoints_total_limit", "2",
        "--logging_steps", "1", "--report_to", "none", "--seed", "5",
        "--eval_split", "test", "--test_split", ""]  # tiny_faces has train and test splits only


def start(output_dir: Path, dataset: str, config_file: str, log_name: str, resume: bool) -> subprocess.Popen:
    output_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROOT / "scripts" / "finetune.py"), "--output_dir", str(output_dir),
               "--dataset", dataset, "--config_file", config_file, *ARGS]
    if resume:
        command += ["--resume_from_checkpoint", "latest"]
    log = open(output_dir.parent / f"{output_dir.name}-{log_name}.log", "w")  # a file: a full pipe would block the run
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    process.log_path = log.name
    log.close()
    return process


def tail(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text()[-3000:]


def newest_step(output_dir: Path) -> int:
    found = checkpoint_dirs(str(output_dir))
    return int(found[-1].rsplit("-", 1)[1]) if found else 0


def temporary_folders(output_dir: Path) -> list[str]:
    return [name for name in leftovers(output_dir) if name.startswith(".tmp-step-")]


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 240) -> bool:
    """Poll `condition` (every 0.5 ms); False if the process ended first."""
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            return False
        assert time.time() < deadline, f"timed out waiting for {what}:\n{tail(process)}"
        time.sleep(0.0005)
    return True


def wait_until_stopped(process: subprocess.Popen) -> None:
    """SIGSTOP takes effect asynchronously: wait until the kernel reports the process stopped (Linux), so that the
    file system is not changed behind our back any more."""
    stat = Path(f"/proc/{process.pid}/stat")
    deadline = time.time() + 5
    while stat.exists() and time.time() < deadline:
        if stat.read_text().rsplit(")", 1)[1].split()[0] in ("T", "t", "Z", "X"):
            return
        time.sleep(0.0002)
    if not stat.exists():
        time.sleep(0.01)


def kill_inside_a_save(process: subprocess.Popen, output_dir: Path, after_step: int, rng: random.Random) -> bool:
    """SIGKILL while a checkpoint of a step after `after_step` is being written: stop the process when a temporary
    checkpoint folder appears (after a random delay of up to 2 ms), and kill it if the folder is still there;
    otherwise let it go on to the next save. False if the run ended first."""
    while True:
        appeared = wait_for(lambda: newest_step(output_dir) >= after_step and temporary_folders(output_dir),
                            process, "a checkpoint save")
        if not appeared:
            return False
        time.sleep(rng.uniform(0, 0.002))
        process.send_signal(signal.SIGSTOP)
        wait_until_stopped(process)
        try:
            if temporary_folders(output_dir):
                process.send_signal(signal.SIGKILL)
                return True
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
        if not wait_for(lambda: not temporary_folders(output_dir), process, "the save to finish"):
            return False


def kill_after_step(process: subprocess.Popen, output_dir: Path, step: int, rng: random.Random) -> bool:
    """SIGKILL a random 0-80 ms after checkpoint `step` appears: in a training step, an evaluation, the best-model
    save or a checkpoint save. False if the run ended first."""
    if not wait_for(lambda: newest_step(output_dir) >= step, process, f"step {step}"):
        return False
    time.sleep(rng.uniform(0, 0.08))
    process.send_signal(signal.SIGKILL)
    return True


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_faces, tiny_config_file):
    """An uninterrupted run (started here; waited for when first needed)."""
    output_dir = tmp_path_factory.mktemp("reference") / "run"
    process = start(output_dir, tiny_faces, tiny_config_file, "full", resume=False)
    finished = {}

    def wait() -> Path:
        if not finished:
            process.wait(timeout=600)
            assert process.returncode == 0, tail(process)
            finished["done"] = True
        return output_dir

    yield wait
    if process.poll() is None:
        process.kill()
        process.wait()


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("trial", range(NUM_TRIALS))
def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_weights(tmp_path, tiny_faces, tiny_config_file,
                                                                             reference_run, trial):
    rng = random.Random(1000 + trial)
    # Even trials: first kill inside a checkpoint save, then the resumed run is killed again at a random point.
    # Odd trials: one kill at a random point.
    plan = ["save", "random"] if trial % 2 == 0 else ["random"]
    output_dir = tmp_path / "run"
    expected_files = None
    killed_inside_a_save = False
    for number, how in enumerate(plan):
        resume = number > 0
        before = newest_step(output_dir) if resume else 0
        process = start(output_dir, tiny_faces, tiny_config_file, f"kill{number}", resume=resume)
        if how == "save":
            killed = kill_inside_a_save(process, output_dir, rng.randint(before + 1, STEPS - 4), rng)
        else:
            killed = kill_after_step(process, output_dir, rng.randint(before + 1, STEPS - 4), rng)
        process.wait(timeout=60)
        assert killed and process.returncode == -signal.SIGKILL, f"the run was not killed ({how}):\n{tail(process)}"
        if how == "save":
            assert temporary_folders(output_dir), "the kill did not land inside a checkpoint save"
            killed_inside_a_save = True
        if expected_files is None:
            expected_files = set(os.listdir(reference_run() / CHECKPOINTS_DIR / f"step-{STEPS}"))
        latest = assert_only_complete_checkpoints(output_dir, expected_files)
        assert latest is not None and newest_step(output_dir) >= before

    resumed = start(output_dir, tiny_faces, tiny_config_file, "final", resume=True)
    resumed.wait(timeout=600)
    assert resumed.returncode == 0, tail(resumed)
    assert "Resumed from" in Path(resumed.log_path).read_text()
    assert leftovers(output_dir) == [], "a crashed save's temporary folder was not cleaned up"
    assert killed_inside_a_save or trial % 2

    reference = reference_run()
    for folder in (f"{CHECKPOINTS_DIR}/step-{STEPS}", "best"):
        expected = load_file(reference / folder / "model.safetensors")
        got = load_file(output_dir / folder / "model.safetensors")
        assert expected.keys() == got.keys(), folder
        for name in expected:
            assert torch.equal(expected[name], got[name]), f"{folder}: {name}"
    assert complete(str(output_dir / CHECKPOINTS_DIR / f"step-{STEPS}"), expected_files) is None
    results, expected_results = (json.loads((d / "all_results.json").read_text()) for d in (output_dir, reference))
    assert results["history"] == expected_results["history"]
    assert metrics(output_dir) == metrics(reference), "metrics.jsonl does not read as one uninterrupted run"

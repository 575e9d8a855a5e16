"""What training writes is whole or absent (issue 15 items 2, 3 and 9): checkpoints and the final folder appear under
their names only when complete, resume takes the newest complete checkpoint and says which, a failed write names the
folder and leaves nothing half-written, and the run is the same under two processes.

The fault-injection test SIGKILLs training at random moments while it saves (20 trials) and checks every folder left
under its final name, then resumes and compares with the uninterrupted run. It and the two-process test are `slow`.

CPU, tiny model (`tiny:qwen2_vl:32x1`), synthetic scenes at 56 px.
"""

import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import trainer_fuscore
from fuscore.atomic import AtomicWriteError
from fuscore.training.loading import checkpoint_problems, resolve_resume_checkpoint


REPO_ROOT = Path(__file__).resolve().parents[1]
# 8 scenes x 4 images, P=2 x M=4: 4 batches per epoch; a checkpoint after every step.
RUN = ["--model_name_or_path", "tiny:qwen2_vl:32x1", "--dtype", "float32", "--train_table", "synthetic",
       "--synthetic_image_size", "56", "--synthetic_train_scenes", "8", "--synthetic_eval_scenes", "4",
       "--synthetic_images_per_scene", "4", "--pairs_per_batch", "2", "--images_per_pair", "4", "--max_steps", "5",
       "--learning_rate", "0.001", "--lr_scheduler_type", "linear", "--warmup_steps", "1", "--logging_steps", "1",
       "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--per_device_eval_batch_size", "8",
       "--seed", "5", "--save_strategy", "steps", "--save_steps", "1"]
MAX_STEPS = 5


def _weights(output_dir: Path) -> dict:
    return load_file(str(output_dir / "final" / "model.safetensors"))


def _max_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[key].float() - b[key].float()).abs().max().item() for key in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    results = trainer_fuscore.main(RUN + ["--output_dir", str(output_dir)])
    return {"output_dir": output_dir, "weights": _weights(output_dir), "results": results}


@contextmanager
def _file_size_limit(limit: int):
    """Writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored), as a full disk makes them fail."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------


def test_every_checkpoint_is_complete_and_nothing_temporary_is_left(uninterrupted):
    output_dir = uninterrupted["output_dir"]
    names = sorted(entry.name for entry in output_dir.iterdir())
    assert names == [f"checkpoint-{step}" for step in range(1, MAX_STEPS + 1)] + ["final", "results.json"]
    assert all(checkpoint_problems(output_dir / f"checkpoint-{step}") == [] for step in range(1, MAX_STEPS + 1))


def test_a_checkpoint_whose_write_fails_is_not_left_under_its_name(tmp_path, monkeypatch):
    """The write of checkpoint-2 fails for real (its weights file cannot grow past 64 KB, as on a full disk): one
    error naming that folder, and no `checkpoint-2` (the half-written temporary folder is removed)."""
    from fuscore.training.trainer import FuScoreTrainer

    original = FuScoreTrainer._save_checkpoint

    def save_on_a_full_disk(self, *args, **kwargs):
        if self.state.global_step != 2:
            return original(self, *args, **kwargs)
        with _file_size_limit(64_000):
            return original(self, *args, **kwargs)

    monkeypatch.setattr(FuScoreTrainer, "_save_checkpoint", save_on_a_full_disk)
    with pytest.raises(AtomicWriteError, match=f"Could not write the folder {tmp_path / 'checkpoint-2'}: .*Nothing "
                                               "was left under that name"):
        trainer_fuscore.main(RUN + ["--output_dir", str(tmp_path)])
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["checkpoint-1"]
    assert checkpoint_problems(tmp_path / "checkpoint-1") == []


def test_a_full_disk_while_torch_writes_the_optimizer_names_the_file_and_the_cause(tmp_path, monkeypatch):
    """torch.save reports a full disk as "unexpected pos ..." with no file name: the error names checkpoint-2's
    optimizer.pt, is ENOSPC, and leaves no checkpoint-2."""
    import errno
    import shutil

    import torch

    original_save, original_usage = torch.save, shutil.disk_usage
    full = threading.Event()

    def save(obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.pt") and "checkpoint-2" in str(f):
            full.set()
            Path(f).write_bytes(b"PK")  # torch has created the file when its write fails
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 598")
        return original_save(obj, f, *args, **kwargs)

    def disk_usage(path):
        usage = original_usage(path)
        return usage._replace(free=0) if full.is_set() else usage

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    with pytest.raises(AtomicWriteError) as error:
        trainer_fuscore.main(RUN + ["--output_dir", str(tmp_path)])
    assert error.value.errno == errno.ENOSPC
    assert str(error.value).startswith(f"Could not write {tmp_path / 'checkpoint-2' / 'optimizer.pt'}: No space left "
                                       "on device")
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["checkpoint-1"]
    assert checkpoint_problems(tmp_path / "checkpoint-1") == []


@pytest.mark.slow
def test_resume_last_passes_over_incomplete_checkpoints_and_says_which(uninterrupted, tmp_path, capsys):
    """A checkpoint killed mid-write by an older writer (config and weights, no optimizer or trainer state) is never
    taken for a complete one: `last` resumes from the newest complete checkpoint, names it, and ends where the
    uninterrupted run ended. A named incomplete checkpoint is refused before any work, saying what it lacks."""
    import shutil

    source = uninterrupted["output_dir"]
    shutil.copytree(source / "checkpoint-3", tmp_path / "checkpoint-3")
    for step in (4, 5):  # what a kill leaves: config and weights, nothing after them
        partial = tmp_path / f"checkpoint-{step}"
        partial.mkdir()
        for name in ("config.json", "model.safetensors"):
            shutil.copy(source / f"checkpoint-{step}" / name, partial / name)
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4, "log_hist')  # cut short
    assert resolve_resume_checkpoint("last", tmp_path) == str(tmp_path / "checkpoint-3")
    with pytest.raises(ValueError, match=r"checkpoint-5 is not a complete checkpoint: no trainer_state.json; "
                                         r"no optimizer state; no scheduler state"):
        trainer_fuscore.main(RUN + ["--output_dir", str(tmp_path / "other"),
                                    "--resume_from_checkpoint", str(tmp_path / "checkpoint-5")])

    results = trainer_fuscore.main(RUN + ["--output_dir", str(tmp_path), "--resume_from_checkpoint", "last"])
    assert results["resumed_from"] == str(tmp_path / "checkpoint-3")
    assert f"resuming from {tmp_path / 'checkpoint-3'}" in capsys.readouterr().out
    assert _max_difference(_weights(tmp_path), uninterrupted["weights"]) < 1e-6
    # The incomplete folders were replaced by complete ones when the resumed run saved those steps again.
    assert all(checkpoint_problems(tmp_path / f"checkpoint-{step}") == [] for step in (3, 4, 5))


# ---------------------------------------------------------------------------------------------------------------------
# The final folder
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_final_folder_that_cannot_be_written_is_one_clear_error_and_leaves_the_old_one(uninterrupted, tmp_path,
                                                                                          monkeypatch):
    """The write of the final folder fails for real (the weights file cannot grow past 64 KB): one error naming the
    folder, nothing half-written under `final`, and the previous complete `final` still there, unchanged."""
    import shutil

    from modeling_fuscore import FuScoreForQuality

    output_dir = tmp_path / "run"
    output_dir.mkdir()
    shutil.copytree(uninterrupted["output_dir"] / "final", output_dir / "final")
    before = sorted(path.name for path in (output_dir / "final").iterdir())
    original = trainer_fuscore.save_final_model

    def save_on_a_full_disk(*args, **kwargs):
        with _file_size_limit(64_000):
            return original(*args, **kwargs)

    monkeypatch.setattr(trainer_fuscore, "save_final_model", save_on_a_full_disk)
    with pytest.raises(AtomicWriteError) as error:
        trainer_fuscore.main(RUN + ["--output_dir", str(output_dir), "--save_strategy", "no", "--max_steps", "2"])
    message = str(error.value)
    assert f"Could not write the folder {output_dir / 'final'}" in message and "Nothing was left" in message
    assert sorted(entry.name for entry in output_dir.iterdir()) == ["final"], "no temporary folder is left either"
    assert sorted(path.name for path in (output_dir / "final").iterdir()) == before
    model = FuScoreForQuality.from_pretrained(str(output_dir / "final"))
    assert _max_difference({k: v for k, v in model.state_dict().items() if k in uninterrupted["weights"]},
                           uninterrupted["weights"]) == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# Two processes give the one-process numbers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_cpu_processes_give_the_one_process_numbers(tmp_path):
    """Two processes on the CPU (gloo) shard the evaluation and the training batches (whole pair-aware batches per
    process) and gather the metrics and every loss term: before training the numbers are the one-process numbers
    exactly; after training they are those of one process accumulating the same two batches.

    Launched with `--multi_gpu --num_processes 2`: `accelerate launch --cpu --num_processes 2` starts a single
    process (accelerate 1.15), which is why it "gives the one-process numbers" trivially."""
    argv = RUN + ["--save_strategy", "no", "--max_steps", "3", "--optim", "sgd", "--lr_scheduler_type", "constant",
                  "--warmup_steps", "0", "--learning_rate", "0.1", "--ddp_find_unused_parameters", "false"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RANK", "LOCAL_RANK", "WORLD_SIZE",
                                                                                    "MASTER_", "ACCELERATE_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(REPO_ROOT / "trainer_fuscore.py"), *argv,
               "--output_dir", str(tmp_path / "two")]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["num_processes"] == 2
    one = trainer_fuscore.main(argv + ["--gradient_accumulation_steps", "2", "--output_dir", str(tmp_path / "one")])

    def numbers(metrics: dict) -> dict:
        return {key: value for key, value in metrics.items() if not key.endswith(("runtime", "per_second", "_time"))}

    assert numbers(two["before"]) == numbers(one["before"])
    assert {"before_loss_dist", "before_loss_within", "before_loss_cross", "before_srcc"} <= set(two["before"])
    after_two, after_one = numbers(two["after"]), numbers(one["after"])
    assert set(after_two) == set(after_one)
    for key, value in after_one.items():
        assert after_two[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert two["train"]["train_loss"] == pytest.approx(one["train"]["train_loss"], rel=1e-5)
    assert _max_difference(_weights(tmp_path / "two"), _weights(tmp_path / "one")) < 1e-5


def _free_port() -> int:
    import socket

    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------------
# Fault injection: SIGKILL while saving
# ---------------------------------------------------------------------------------------------------------------------

# Each training to kill is its own process, forked from one server process that imported the trainer once (a fresh
# interpreter per trial would spend 8-10 s on imports alone). The child announces each save (a checkpoint or the final
# folder) on its own pipe, so the parent can kill it inside one.
_FORK_SERVER = """
import json, os, sys, time, traceback
import trainer_fuscore
from fuscore.training.trainer import FuScoreTrainer

def announced(function, label):
    def wrapper(*args, **kwargs):
        print(f"SAVE-START {label} {time.monotonic()}", flush=True)
        result = function(*args, **kwargs)
        print(f"SAVE-END {label} {time.monotonic()}", flush=True)
        return result
    return wrapper

FuScoreTrainer._save_checkpoint = announced(FuScoreTrainer._save_checkpoint, "checkpoint")
trainer_fuscore.save_final_model = announced(trainer_fuscore.save_final_model, "final")
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:  # the training process: its stdout is the request's pipe
        code = 1
        try:
            os.dup2(os.open(request["announcements"], os.O_WRONLY), 1)
            trainer_fuscore.main(request["argv"])
            print("DONE", flush=True)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@pytest.fixture
def fork_server():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-c", _FORK_SERVER], cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield server
    finally:
        server.stdin.close()
        server.wait(timeout=60)


class _ForkedTraining:
    """A training run in a process forked by the server, with the parts of `subprocess.Popen` the test uses: `stdout`
    (its announcements), `poll`, `send_signal` (through a pidfd: never another process that reused the pid), `wait`
    and `returncode`."""

    def __init__(self, server: subprocess.Popen, output_dir: Path):
        announcements = output_dir.parent / f"{output_dir.name}.announcements"
        os.mkfifo(announcements)
        server.stdin.write(json.dumps({"argv": RUN + ["--output_dir", str(output_dir)],
                                       "announcements": str(announcements)}) + "\n")
        server.stdin.flush()
        self.pid = int(server.stdout.readline())
        self._pidfd = os.pidfd_open(self.pid)  # the child is alive: it waits for this end of the pipe to open
        self.stdout = open(announcements)
        self._server, self.returncode = server, None

    def poll(self):
        return self.returncode

    def send_signal(self, signum):
        try:
            signal.pidfd_send_signal(self._pidfd, signum)
        except ProcessLookupError:  # it has exited
            pass

    def wait(self):
        if self.returncode is None:
            self.returncode = int(self._server.stdout.readline())
            self.stdout.close()
        return self.returncode

    def __del__(self):  # the pidfd stays open until then: a late timer's signal finds the exited process, not a reuse
        os.close(self._pidfd)


def _saves(process: _ForkedTraining, on_start=None) -> tuple:
    """Reads the child's announcements until it exits: `(label, start, end)` of each finished save, and whether the
    child ended inside a save (one started and not finished)."""
    saves, started = [], None
    for line in process.stdout:
        parts = line.split()
        if parts and parts[0] == "SAVE-START":
            started = {"label": parts[1], "start": float(parts[2])}
            if on_start is not None:
                on_start(len(saves))
        elif parts and parts[0] == "SAVE-END":
            saves.append((started["label"], started["start"], float(parts[2])))
            started = None
    process.wait()
    return saves, started is not None


def _check_folders(output_dir: Path) -> list:
    """Every folder under a final name is complete and loads; returns the checkpoints found."""
    from modeling_fuscore import FuScoreForQuality

    checkpoints = sorted(output_dir.glob("checkpoint-*"))
    for checkpoint in checkpoints:
        assert checkpoint_problems(checkpoint) == [], checkpoint
        FuScoreForQuality.from_pretrained(str(checkpoint))
    final = output_dir / "final"
    if final.exists():
        names = {path.name for path in final.iterdir()}
        assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "fuscore_eval.json",
                "README.md"} <= names, names
        model = FuScoreForQuality.from_pretrained(str(final))
        image = np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8)
        assert np.isfinite(model.score([image])).all()
    return checkpoints


@pytest.mark.slow
def test_training_killed_while_saving_leaves_only_whole_folders_and_resumes_to_the_same_model(uninterrupted,
                                                                                            fork_server, tmp_path):
    """20 trials: the training subprocess is SIGKILLed at a random moment inside a random save (a checkpoint or the
    final folder). Every folder under its final name is complete and loads; `--resume_from_checkpoint last` then
    always works and ends at the uninterrupted run's weights."""
    server = fork_server
    # Calibrate the kill moments on one uninterrupted child: how long each save takes here.
    calibration, _ = _saves(_ForkedTraining(server, tmp_path / "calibration"))
    assert [label for label, _, _ in calibration] == ["checkpoint"] * MAX_STEPS + ["final"]
    rng = random.Random(20261201)
    outcomes = []
    for trial in range(20):
        output_dir = tmp_path / f"trial{trial}"
        target = rng.randrange(len(calibration))  # which save to interrupt, and when inside it
        delay = rng.uniform(0.0, calibration[target][2] - calibration[target][1])
        process = _ForkedTraining(server, output_dir)

        def kill_later(index, process=process, target=target, delay=delay):
            if index == target:
                threading.Timer(delay, lambda: process.poll() is None and process.send_signal(signal.SIGKILL)).start()

        _, inside = _saves(process, on_start=kill_later)
        killed = process.returncode == -signal.SIGKILL
        checkpoints = _check_folders(output_dir)
        resumed = trainer_fuscore.main(RUN + ["--output_dir", str(output_dir), "--resume_from_checkpoint", "last"])
        expected = str(checkpoints[-1]) if checkpoints else None
        assert resumed["resumed_from"] == (expected if killed else str(output_dir / f"checkpoint-{MAX_STEPS}"))
        assert _max_difference(_weights(output_dir), uninterrupted["weights"]) < 1e-6, trial
        assert not [entry.name for entry in output_dir.iterdir() if entry.name.startswith(".")], "temporaries left"
        _check_folders(output_dir)
        outcomes.append((target, killed, inside, len(checkpoints)))
    killed = sum(1 for _, was_killed, _, _ in outcomes if was_killed)
    inside = sum(1 for _, _, was_inside, _ in outcomes if was_inside)
    durations = [round(end - start, 3) for _, start, end in calibration]
    print(f"fault injection: {killed}/20 killed, {inside} inside a save; (save index, killed, inside a save, "
          f"checkpoints left) = {outcomes}; save durations {durations} s")
    assert inside >= 10, outcomes  # the kills land inside saves, not only between them

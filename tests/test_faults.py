"""Faults: a run killed at any moment resumes to the same weights and the same metrics, Ctrl-C ends a run with one
line, and a broken data file is one line naming it, before any work."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, TINY_FLAGS
import data
import run
import eval as ev
import train

# 4 epochs: stage 0, stage 1, then two at the final stage (the first of them always writes best.pt)
FLAGS = TINY_FLAGS + ["--num_epochs", "4", "--uniform_prob", "0.5", "--lr_schedule", "cosine", "--warmup_steps", "1"]
DETERMINISTIC = ("epoch", "stage", "train_loss", "val_loss", "val_acc", "val_new_tokens", "questions_seen")


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [{k: m[k] for k in DETERMINISTIC} for m in map(json.loads, f)]


def train_cli(mini_dir, out, *extra, kill_at=None):
    """train.py as a user runs it; COCONUT_TEST_KILL SIGKILLs it at a named moment."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("COCONUT_TEST_KILL", None)
    if kill_at:
        env["COCONUT_TEST_KILL"] = kill_at
    return subprocess.run([sys.executable, "train.py", *FLAGS, "--data_dir", mini_dir, "--out_dir", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True)


def test_a_run_killed_at_every_awkward_moment_resumes_to_the_uninterrupted_run(mini_dir, tmp_path):
    assert train_cli(mini_dir, tmp_path / "whole").returncode == 0  # as the killed runs: same process, same threads
    run = tmp_path / "killed"
    # each kill lands at a different moment; every later command resumes from what the kill left on disk:
    # (moment, epochs last.pt holds, lines metrics.jsonl holds)
    moments = [("mid-epoch:1", 1, 1),         # a step into epoch 2
               ("after-checkpoint:1", 2, 1),  # last.pt holds epoch 2; metrics.jsonl lags behind ...
               ("mid-save:2", 2, 2),          # ... and was rewritten from it on resume; a temporary file half done
               ("after-best:2", 2, 2)]        # best.pt holds epoch 3, last.pt still epoch 2
    for i, (moment, held, lines) in enumerate(moments):
        done = train_cli(mini_dir, run, *(["--resume"] if i else []), kill_at=moment)
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        assert torch.load(run / "last.pt", weights_only=True)["epoch"] + 1 == held
        assert [m["epoch"] for m in metrics(run)] == list(range(1, lines + 1)), moment
        assert any(f.endswith(".tmp") for f in os.listdir(run)) == moment.startswith("mid-save")
    done = train_cli(mini_dir, run, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    assert metrics(run) == metrics(tmp_path / "whole")  # each epoch once, with the same numbers
    for name in ("last.pt", "best.pt"):
        a = torch.load(tmp_path / "whole" / name, weights_only=True)
        b = torch.load(run / name, weights_only=True)
        assert a["epoch"] == b["epoch"] == (3 if name == "last.pt" else b["epoch"])
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (name, k)
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]


def test_ctrl_c_just_after_a_checkpoint_names_that_checkpoint(mini_dir, tmp_path):
    """Ctrl-C between writing last.pt and the rest of the epoch's bookkeeping: the line names what is on disk."""
    done = train_cli(mini_dir, tmp_path / "run", kill_at="after-checkpoint:0:INT")
    assert done.returncode == 130, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"interrupted in epoch 1; {tmp_path / 'run' / 'last.pt'} holds epoch 1: python train.py ")
    assert line.endswith(" --resume continues")
    assert [m["epoch"] for m in metrics(tmp_path / "run")] == [1]  # the bookkeeping caught up with last.pt
    assert train_cli(mini_dir, tmp_path / "run", "--resume").returncode == 0


def test_ctrl_c_ends_a_run_with_one_line_and_a_checkpoint_that_resumes(mini_dir, tmp_path):
    out = tmp_path / "run"
    args = FLAGS[:-6] + ["--num_epochs", "400", "--data_dir", mini_dir, "--out_dir", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    line = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr
    match = re.fullmatch(r"interrupted in epoch (\d+); (.+) holds epoch (\d+): (python train\.py .*) --resume continues",
                         line)
    assert match, line
    ckpt = run.load_checkpoint(match[2])  # loadable, and the epoch it says
    assert match[2] == str(out / "last.pt") and ckpt["epoch"] + 1 == int(match[3]) <= int(match[1])
    assert match[4].split()[2:] == args  # the command as given, to which --resume is added
    assert [m["epoch"] for m in metrics(out)] == list(range(1, int(match[3]) + 1))
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


# --- broken data files -----------------------------------------------------------------------------------------

BROKEN = {  # a data file broken one way, made from a good record -> the line's end, after "error: PATH: "
    "not UTF-8": (lambda good: b'[{"question": "caf\xe9"}]', "not UTF-8 text (byte 18)"),
    "not JSON": (lambda good: b'[{"question": ', "not valid JSON (Expecting value: line 1 column 15 (char 14))"),
    "not a list": (lambda good: json.dumps(good).encode(), "expected a JSON list of records, got dict"),
    "empty": (lambda good: b"[]", "an empty list, no records"),
    "missing field": (lambda good: json.dumps([good, {k: v for k, v in good.items() if k != "answer"}]).encode(),
                      "record 1: field 'answer' must be a string (missing)"),
    "mistyped field": (lambda good: json.dumps([dict(good, steps=good["steps"][0])]).encode(),
                       "record 0: field 'steps' must be a list of strings"),
    "too long": (lambda good: json.dumps([good, dict(good, question=" ".join([good["question"]] * 40))]).encode(),
                 re.compile(r"record 1: \d+ tokens \(.*\) exceed the model's context of 1024")),
}


def good_record(mini_dir):
    return data.load_records(os.path.join(mini_dir, "prosqa_train.json"))[0]


def expect_line(line, path, end):
    if isinstance(end, str):
        assert line == f"error: {path}: {end}"
    else:
        assert line.startswith(f"error: {path}: ") and end.fullmatch(line[len(f"error: {path}: "):]), line


@pytest.mark.parametrize("split", ["train", "valid"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_split_stops_training_with_one_line_and_no_run_folder(mini_dir, tmp_path, split, case):
    make, end = BROKEN[case]
    folder = tmp_path / "data"
    shutil.copytree(mini_dir, folder)
    path = folder / f"prosqa_{split}.json"
    path.write_bytes(make(good_record(mini_dir)))
    out = tmp_path / "run"
    with pytest.raises((SystemExit, data.DataError)) as e:
        train.main(TINY_FLAGS + ["--num_epochs", "1", "--data_dir", str(folder), "--out_dir", str(out)])
    line = str(e.value) if isinstance(e.value, SystemExit) else f"error: {e.value}"
    expect_line(line, path, end)
    assert not out.exists()


@pytest.fixture(scope="module")
def checkpoint(mini_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train.main(TINY_FLAGS + ["--num_epochs", "1", "--data_dir", mini_dir, "--out_dir", str(out)])
    return str(out)


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_eval_data_file_is_one_line_before_any_work(checkpoint, mini_dir, tmp_path, case):
    make, end = BROKEN[case]
    path = tmp_path / "questions.json"
    path.write_bytes(make(good_record(mini_dir)))
    with pytest.raises((SystemExit, data.DataError)) as e:
        ev.main(["--ckpt", checkpoint, "--data", str(path)])
    line = str(e.value) if isinstance(e.value, SystemExit) else f"error: {e.value}"
    expect_line(line, path, end)
    assert not any(name.startswith("eval_") for name in os.listdir(checkpoint))


def test_a_user_sees_the_broken_file_in_one_line_and_a_failing_exit_status(mini_dir, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(mini_dir, folder)
    (folder / "prosqa_valid.json").write_bytes(b"\xff\xfe[]")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *TINY_FLAGS, "--data_dir", str(folder),
                           "--out_dir", str(tmp_path / "run")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: {folder / 'prosqa_valid.json'}: not UTF-8 text (byte 0)"
    assert not (tmp_path / "run").exists()


def test_too_many_new_tokens_name_the_first_record_that_no_longer_fits(mini_dir, tmp_path):
    with pytest.raises(SystemExit) as e:
        train.main(TINY_FLAGS + ["--num_epochs", "1", "--data_dir", mini_dir, "--out_dir", str(tmp_path / "run"),
                                 "--max_new_tokens", "5000"])
    expect_line(str(e.value), os.path.join(mini_dir, "prosqa_train.json"), re.compile(
        r"record 0: \d+ tokens \(sequence \+ --max_new_tokens 5000\) exceed the model's context of 1024; "
        r"11 more records too"))
    assert not (tmp_path / "run").exists()

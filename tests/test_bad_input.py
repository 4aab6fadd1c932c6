"""Bad input: every flag and file is checked before any work, fails with one line naming it, and leaves no trace."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY_FLAGS
import data
import tasks
import eval as ev
import train

TINY = TINY_FLAGS + ["--num_epochs", "1"]


@pytest.fixture(scope="module")
def good_ckpt(mini_dir, tmp_path_factory):
    """A real checkpoint of train.py, to damage in the tests below."""
    out = tmp_path_factory.mktemp("good")
    train.main(TINY + ["--data_dir", mini_dir, "--out_dir", str(out / "run")])
    return str(out / "run" / "last.pt")


def refused(call, args):
    """The SystemExit message of a call that must fail."""
    with pytest.raises(SystemExit) as e:
        call(args)
    return str(e.value)


# --- flags ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags,line", [
    (["--epochs_per_stage", "0"], "error: --epochs_per_stage 0: each stage lasts at least 1 epoch"),
    (["--micro_batch", "0"], "error: --micro_batch 0: must be at least 1"),
    (["--num_epochs", "0"], "error: --num_epochs 0: must be at least 1"),
    (["--uniform_prob", "2"], "error: --uniform_prob 2.0: a probability, from 0 to 1"),
    (["--lr", "-1"], "error: --lr -1.0: must be greater than 0"),
    (["--min_lr", "0.5"], "error: --min_lr 0.5: must be from 0 to --lr (0.001)"),
    (["--weight_decay", "-0.1"], "error: --weight_decay -0.1: must be 0 or more"),
    (["--warmup_steps", "-1"], "error: --warmup_steps -1: must be 0 or more"),
    (["--max_latent_stage", "-1"], "error: --max_latent_stage -1: must be 0 or more"),
    (["--max_latent_stage", "2000"], "error: --max_latent_stage 2000: 2000 thoughts (x --c 1) do not fit a context of 1024"),
    (["--c", "0"], "error: --c 0: must be at least 1"),
    (["--n_head", "3"], "error: --n_head 3: must divide --n_embd 32"),
    (["--n_layer", "0"], "error: --n_layer 0: must be at least 1"),
    (["--batch_size", "5"], "error: --batch_size 5: is not a multiple of --micro_batch 2"),
    (["--start_epoch", "3"], "error: --start_epoch 3: must be from 0 to --num_epochs - 1 (0)"),
    (["--bf16", "2"], "error: --bf16 2: 0 or 1"),
    (["--pad_latent_to_max", "-1"], "error: --pad_latent_to_max -1: 0 or 1"),
    (["--train_size", "0"], "error: --train_size 0: must be at least 1"),
    (["--dataset", "mnist"], "error: --dataset 'mnist': expected one of prosqa, prontoqa, gsm8k"),
    (["--dataset", "gsm8k", "--stream", "1"], "error: --stream 1: draws generated questions: only for --model tiny "
                                              "on prosqa or prontoqa, without --data_dir"),
    (["--method", "magic"], "error: --method 'magic': expected one of coconut, cot, no-cot, pause, icot, no-thought, "
                            "pause-as-thought, no-curriculum"),
    (["--model", "gpt7"], "error: --model 'gpt7': expected auto, tiny, gpt2, gpt2-medium, gpt2-large, gpt2-xl or a "
                          "Hugging Face folder"),
    (["--device", "tpu"], "error: --device tpu: expected cpu, cuda, cuda:N or mps"),
    (["--method", "cot", "--frontier_loss", "1"],
     "error: --frontier_loss 1.0: scores thoughts on a graph: only for --dataset prosqa and --method coconut or "
     "no-curriculum"),
    (["--recipe", "prosqa-mini-nothing"], "error: --recipe prosqa-mini-nothing: no recipes/prosqa-mini-nothing.txt; "
     "expected one of prontoqa-cot, prosqa-hard-coconut, prosqa-hard-cot, prosqa-mini-coconut, "
     "prosqa-mini-coconut-analysis, prosqa-mini-coconut-c2, prosqa-mini-coconut-c2-analysis, "
     "prosqa-mini-coconut-frontier, prosqa-mini-coconut-mixed, prosqa-mini-cot, prosqa-mini-no-cot"),
])
def test_bad_train_flags_fail_with_one_line_and_write_nothing(mini_dir, tmp_path, flags, line):
    out = tmp_path / "run"
    assert refused(train.main, TINY + ["--data_dir", mini_dir, "--out_dir", str(out), *flags]) == line
    assert not out.exists()


def test_init_from_gives_the_shape_and_vocabulary_and_a_flag_saying_otherwise_is_refused(tmp_path):
    cot = os.path.join(ROOT, "models", "prosqa-mini-cot")
    for flag, value, theirs in (("--n_embd", "256", "128"), ("--n_layer", "6", "4"),
                                ("--vocab", "words", "parent-child")):
        assert refused(train.main, ["--init_from", cot, flag, value, "--out_dir", str(tmp_path / "run")]) == (
            f"error: {flag} {value}: --init_from {cot} is {theirs}: its shape and vocabulary are the run's "
            "(--init_from scratch: a new model)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags,start", [
    (["--lr", "fast"], "error: argument --lr: invalid float value: 'fast'"),
    (["--lr_schedule", "linear"], "error: argument --lr_schedule: invalid choice: 'linear' (choose from "),
    (["--vocab", "chars"], "error: argument --vocab: invalid choice: 'chars' (choose from "),
])
def test_flags_argparse_rejects_are_one_line_too(mini_dir, tmp_path, flags, start):
    line = refused(train.main, TINY + ["--data_dir", mini_dir, "--out_dir", str(tmp_path / "run"), *flags])
    assert line.startswith(start) and "\n" not in line  # the choices are quoted differently across Pythons
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags,line", [
    (["--nodes", "4", "5"], "error: --nodes 4 5: MIN must be at most MAX, at least 6 (a 2-step path, two people, a "
                            "negative and a concept above it) and MAX at most 40 (38 concept names)"),
    (["--path", "3", "2"], "error: --path 3 2: MIN must be at least 1 and at most MAX"),
    (["--dataset", "prontoqa", "--model", "tiny", "--stream", "1", "--path", "2", "7"],
     "error: --path 2 7: ProntoQA's hops: from 1 to 6, MIN at most MAX (17 concept names)"),
])
def test_bad_generator_flags_of_the_laptop_recipe_write_no_data(tmp_path, monkeypatch, flags, line):
    monkeypatch.chdir(tmp_path)  # the laptop recipe would generate into ./data
    laptop = ["--device", "cpu", "--init_from", "scratch", "--n_layer", "1", "--n_embd", "32", "--n_head", "2"]
    assert refused(train.main, laptop + flags) == line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flags,line", [
    (["--batch_size", "0"], "error: --batch_size 0: must be at least 1"),
    (["--limit", "0"], "error: --limit 0: must be at least 1"),
    (["--probe", "-2"], "error: --probe -2: must be 0 or more"),
    (["--latents", "0", "-1"], "error: --latents 0 -1: thought counts from 0 to 999"),
    (["--data", "nowhere.json"], "error: --data nowhere.json: no such file"),
])
def test_bad_eval_flags_fail_with_one_line(good_ckpt, flags, line):
    assert refused(ev.main, ["--ckpt", good_ckpt, *flags]) == line


def test_eval_needs_a_checkpoint_or_runs():
    assert refused(ev.main, []) == "error: --ckpt (none): give at least one run folder or .pt (or --curves RUN...)"


def test_curves_need_a_plot_folder_and_run_folders(tmp_path):
    assert refused(ev.main, ["--curves", str(tmp_path)]) == f"error: --curves {tmp_path}: needs --plot DIR"
    assert refused(ev.main, ["--curves", str(tmp_path), "--plot", str(tmp_path / "figs")]) == (
        f"error: --curves {tmp_path}: no metrics.jsonl in this folder")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flags,line", [
    (["--questions", "0"], "error: --questions 0: must be at least 1"),
    (["--max_new_tokens", "0"], "error: --max_new_tokens 0: must be at least 1"),
    (["--device", "cuda:7"], "error: --device cuda:7: CUDA is not available"),
])
def test_bad_bench_flags_fail_with_one_line(flags, line):
    import bench
    assert refused(bench.main, flags) == line


# --- files ---------------------------------------------------------------------------------------------------

def damaged(good_ckpt, tmp_path, kind):
    """A checkpoint file broken in one way; returns (path, the part of the line that must name what is wrong)."""
    path = tmp_path / f"{kind}.pt"
    blob = open(good_ckpt, "rb").read()
    if kind == "missing":
        return str(path), f"{path}: no such checkpoint"
    if kind == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
        return str(path), f"{path}: truncated or corrupt, not a readable checkpoint ("
    if kind == "corrupt":
        path.write_bytes(b"\x00garbage" * 100)
        return str(path), f"{path}: not a PyTorch checkpoint ("
    if kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
        return str(path), (f"{path}: not a checkpoint written by train.py (no 'model', 'model_config', 'vocab', "
                           "'meta', 'args')")
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["missing", "truncated", "corrupt", "foreign"])
def test_broken_checkpoints_are_named_by_eval_init_from_and_resume(good_ckpt, mini_dir, tmp_path, kind):
    path, expected = damaged(good_ckpt, tmp_path, kind)
    assert refused(ev.main, ["--ckpt", path]).startswith("error: " + expected)
    out = tmp_path / "run"
    line = refused(train.main, TINY + ["--data_dir", mini_dir, "--out_dir", str(out), "--init_from", path,
                                       "--num_epochs", "3"])
    assert line.startswith("error: " + expected) and not out.exists()
    if kind != "missing":  # --resume reads out_dir/last.pt
        os.makedirs(tmp_path / "resumed")
        shutil.copy(path, tmp_path / "resumed" / "last.pt")
        line = refused(train.main, TINY + ["--data_dir", mini_dir, "--out_dir", str(tmp_path / "resumed"), "--resume"])
        assert line.startswith("error: " + expected.replace(path, str(tmp_path / "resumed" / "last.pt")))
        assert sorted(os.listdir(tmp_path / "resumed")) == ["last.pt"]


class Payload:
    """Unpickling this calls open(path, "w"): a file appears if the checkpoint is ever loaded unsafely."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_carrying_code_is_refused_and_never_run(good_ckpt, mini_dir, tmp_path):
    marker = tmp_path / "payload_ran"
    ckpt = torch.load(good_ckpt, weights_only=True)
    ckpt["meta"]["note"] = Payload(str(marker))
    path = tmp_path / "evil.pt"
    torch.save(ckpt, path)
    line = (f"error: {path}: refused: it holds pickled Python objects that could run code when loaded; our "
            "checkpoints hold only tensors, numbers, strings, lists and dicts")
    assert refused(ev.main, ["--ckpt", str(path)]) == line
    assert refused(train.main, TINY + ["--data_dir", mini_dir, "--out_dir", str(tmp_path / "r"),
                                       "--init_from", str(path), "--num_epochs", "3"]) == line
    assert not marker.exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize("config,message", [
    ("{", "config.json: not valid JSON"),
    ('{"vocab_size": 10, "n_layer": 1}', "config.json: missing n_head, n_embd"),
    ('{"vocab_size": 10, "n_layer": "twelve", "n_head": 2, "n_embd": 8}', "config.json: n_layer must be a whole "
                                                                          "number of at least 1, not 'twelve'"),
    ('{"vocab_size": 10, "n_layer": 1, "n_head": 3, "n_embd": 8}', "config.json: n_head 3 does not divide n_embd 8"),
])
def test_a_model_folder_with_a_broken_config_is_named(mini_dir, tmp_path, config, message):
    folder = tmp_path / "gpt"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    line = refused(train.main, TINY + ["--data_dir", mini_dir, "--out_dir", str(tmp_path / "r"), "--model",
                                       str(folder), "--vocab", "gpt2"])
    assert line.startswith(f"error: --model {folder}: {folder / 'config.json'}") and message in line
    assert not (tmp_path / "r").exists()


def test_malformed_data_files_are_named_and_nothing_is_written(mini_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(mini_dir, bad)
    (bad / "prosqa_valid.json").write_text('[{"question": "q", "steps": [], "answer": 1}]')
    with pytest.raises(data.DataError, match="prosqa_valid.json: record 0: field 'answer' must be a string"):
        train.main(TINY + ["--data_dir", str(bad), "--out_dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()
    with pytest.raises(data.DataError, match=r"prosqa_stats.json: not valid JSON"):
        (tmp_path / "prosqa_stats.json").write_text("[{")
        tasks.main(["prosqa", "--stats", str(tmp_path / "prosqa_stats.json")])


def test_data_out_must_be_a_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(data.DataError, match=r"^--out .*notes.txt: is a file, not a folder$"):
        tasks.main(["prosqa", "--generate", "--train", "5", "--out", str(tmp_path / "notes.txt")])
    assert os.listdir(tmp_path) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"


def test_an_existing_run_is_never_overwritten(mini_dir, good_ckpt):
    out = os.path.dirname(good_ckpt)
    before = open(good_ckpt, "rb").read()
    line = refused(train.main, TINY + ["--data_dir", mini_dir, "--out_dir", out])
    assert line == (f"error: {out} already holds a run ({good_ckpt}); pass --resume to continue it, or --out_dir "
                    "for a new one")
    assert open(good_ckpt, "rb").read() == before


def test_resume_of_another_method_is_refused(mini_dir, good_ckpt):
    out = os.path.dirname(good_ckpt)
    line = refused(train.main, TINY + ["--data_dir", mini_dir, "--out_dir", out, "--resume", "--method", "cot"])
    assert line == f"error: --resume: {good_ckpt} was trained with --method coconut, not cot"


# --- as a user sees it ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("script,flags,line", [
    ("train.py", ["--epochs_per_stage", "0"], "error: --epochs_per_stage 0: each stage lasts at least 1 epoch"),
    ("eval.py", ["--ckpt", "missing.pt"], "error: missing.pt: no such checkpoint"),
    ("tasks.py", ["prosqa", "--generate", "--train", "0"], "error: --train 0: a split holds at least 1 record"),
])
def test_a_user_sees_one_line_and_a_failing_exit_status(tmp_path, script, flags, line):
    done = subprocess.run([sys.executable, os.path.join(ROOT, script), *flags], cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == line and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []

"""train.py: the stage schedule, optimizer resets, learning, exact resume, DDP, and bad input."""

import argparse
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
import data
import train

TINY_FLAGS = ["--model", "tiny", "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--device", "cpu",
              "--c", "1", "--max_latent_stage", "1", "--epochs_per_stage", "1", "--batch_size", "4",
              "--micro_batch", "2", "--max_new_tokens", "24", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def mini_dir(tmp_path_factory):
    """A few small generated ProsQA records, written as a dataset folder."""
    folder = tmp_path_factory.mktemp("prosqa")
    splits = data.generate_prosqa({"train": 8, "valid": 4, "test": 4}, seed=1, nodes=(6, 7), path=(2, 2))
    for s, records in splits.items():
        data.write_json_atomic(records, str(folder / f"prosqa_{s}.json"))
    return str(folder)


def run(mini_dir, out, *extra):
    train.main(TINY_FLAGS + ["--data_dir", mini_dir, "--out_dir", str(out), *extra])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_stage_schedule_per_method():
    args = argparse.Namespace(method="coconut", epochs_per_stage=5, max_latent_stage=6)
    assert [train.stage_for_epoch(e, args) for e in (0, 4, 5, 29, 30, 34, 35, 49)] == [0, 0, 1, 5, 6, 6, 7, 7]
    for method, expected in [("cot", 0), ("no-cot", 0), ("pause", 0), ("no-curriculum", 7)]:
        args.method = method
        assert train.stage_for_epoch(23, args) == expected
    args.method = "icot"
    assert train.stage_for_epoch(23, args) == 23


def test_two_stage_run_rebuilds_the_optimizer_at_each_stage(mini_dir, tmp_path, monkeypatch):
    made = []
    real = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: made.append(1) or real(*a, **k))
    metrics = run(mini_dir, tmp_path / "run", "--num_epochs", "3", "--epochs_per_stage", "2")
    assert [m["stage"] for m in metrics] == [0, 0, 1]
    assert len(made) == 2  # one per stage, not per epoch
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["meta"]["method"] == "coconut" and ckpt["meta"]["special_ids"]["latent"] == data.LATENT_ID
    assert ckpt["epoch"] == 2 and ckpt["stage"] == 1
    assert json.load(open(tmp_path / "run" / "config.json"))["max_latent_stage"] == 1


def test_loss_falls_when_overfitting_eight_samples(mini_dir, tmp_path):
    metrics = run(mini_dir, tmp_path / "fit", "--method", "cot", "--num_epochs", "8", "--batch_size", "2",
                  "--micro_batch", "2", "--lr", "1e-2")
    losses = [m["train_loss"] for m in metrics]
    assert losses[-1] < 0.5 * losses[0]


def test_resume_equals_uninterrupted_bit_for_bit(mini_dir, tmp_path):
    run(mini_dir, tmp_path / "a", "--num_epochs", "3", "--uniform_prob", "0.5")
    run(mini_dir, tmp_path / "b", "--num_epochs", "3", "--uniform_prob", "0.5", "--stop_after_epoch", "2")
    run(mini_dir, tmp_path / "b", "--num_epochs", "3", "--uniform_prob", "0.5", "--resume")
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [json.loads(l)["epoch"] for l in open(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(mini_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    flags = TINY_FLAGS + ["--data_dir", mini_dir, "--num_epochs", "2"]
    for cmd, out in (([sys.executable, "train.py"], "one"),
                     ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                       "127.0.0.1", "--master_port", str(free_port()), "train.py"], "two")):
        done = subprocess.run(cmd + flags + ["--out_dir", str(tmp_path / out)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=False)["model"]
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=False)["model"]
    for k in one:
        torch.testing.assert_close(one[k], two[k], rtol=1e-5, atol=1e-6, msg=k)
    m1 = [json.loads(l) for l in open(tmp_path / "one" / "metrics.jsonl")]
    m2 = [json.loads(l) for l in open(tmp_path / "two" / "metrics.jsonl")]
    assert [m["val_acc"] for m in m1] == [m["val_acc"] for m in m2]  # validation sharded, then summed


@pytest.mark.parametrize("flags,message", [
    (["--dataset", "mnist"], "--dataset 'mnist'"),
    (["--method", "magic"], "--method 'magic'"),
    (["--c", "0"], "--c 0"),
    (["--batch_size", "5"], "--batch_size 5 is not a multiple of --micro_batch 2"),
    (["--max_new_tokens", "5000"], "sequences (prompt + output) exceed the model's context of 1024"),
    (["--model", "gpt7"], "--model 'gpt7'"),
    (["--method", "cot", "--latent_stop", "classifier"], "--latent_stop classifier: only for --method"),
])
def test_bad_flags_stop_before_training_with_a_clear_error(mini_dir, tmp_path, flags, message):
    with pytest.raises(SystemExit) as e:
        train.main(TINY_FLAGS + ["--data_dir", mini_dir, "--out_dir", str(tmp_path / "x"), *flags])
    assert message in str(e.value)
    assert not os.path.exists(tmp_path / "x" / "last.pt")


def test_bad_files_and_checkpoints_are_named(mini_dir, tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    for s in ("train", "valid", "test"):
        (bad / f"prosqa_{s}.json").write_text(open(os.path.join(mini_dir, f"prosqa_{s}.json")).read())
    (bad / "prosqa_valid.json").write_text('[{"question": "q", "steps": [], "answer": 1}]')
    with pytest.raises(data.DataError, match="prosqa_valid.json: record 0: field 'answer'"):
        train.main(TINY_FLAGS + ["--data_dir", str(bad), "--out_dir", str(tmp_path / "y")])
    monkeypatch.setattr(data, "download", lambda url, path: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(data.DataError, match="gsm8k_train.txt is missing"):
        train.main(TINY_FLAGS + ["--dataset", "gsm8k", "--data_dir", str(tmp_path / "none"), "--out_dir", str(tmp_path / "z")])
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(SystemExit, match="not_a_model: no config.json"):
        train.main(TINY_FLAGS + ["--data_dir", mini_dir, "--out_dir", str(tmp_path / "m"),
                                 "--model", str(tmp_path / "not_a_model")])
    run(mini_dir, tmp_path / "cot", "--method", "cot", "--num_epochs", "1")
    with pytest.raises(SystemExit, match="trained with --method cot, not coconut"):
        run(mini_dir, tmp_path / "cot", "--num_epochs", "2", "--resume")
    with pytest.raises(SystemExit, match="does not exist"):
        run(mini_dir, tmp_path / "never", "--resume")
    before = (tmp_path / "cot" / "last.pt").read_bytes()
    with pytest.raises(SystemExit, match="already holds a run"):  # a second run never overwrites the first
        run(mini_dir, tmp_path / "cot", "--method", "cot", "--num_epochs", "1")
    assert (tmp_path / "cot" / "last.pt").read_bytes() == before
    with pytest.raises(SystemExit, match="vocabulary"):
        ckpt = torch.load(tmp_path / "cot" / "last.pt", weights_only=False)
        ckpt["model_config"]["vocab_size"] = 100
        torch.save(ckpt, tmp_path / "other_vocab.pt")
        run(mini_dir, tmp_path / "w", "--init_from", str(tmp_path / "other_vocab.pt"))


def test_checkpoints_are_written_atomically(mini_dir, tmp_path, monkeypatch):
    run(mini_dir, tmp_path / "r", "--num_epochs", "1")
    before = torch.load(tmp_path / "r" / "last.pt", weights_only=False)

    def killed_mid_save(obj, path):
        open(path, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_save)
    with pytest.raises(KeyboardInterrupt):
        run(mini_dir, tmp_path / "r", "--num_epochs", "2", "--resume")
    after = torch.load(tmp_path / "r" / "last.pt", weights_only=False)
    assert after["epoch"] == before["epoch"]


def test_latent_stop_classifier_trains_saves_and_decodes(mini_dir, tmp_path):
    metrics = run(mini_dir, tmp_path / "cls", "--num_epochs", "3", "--latent_stop", "classifier",
                  "--pad_latent_to_max", "0")
    assert [m["stage"] for m in metrics] == [0, 1, 2]
    ckpt = train.load_checkpoint(str(tmp_path / "cls" / "last.pt"))
    assert ckpt["meta"]["latent_stop"] == "classifier" and "stop_head" in ckpt
    model = train.model_from_checkpoint(ckpt, "cpu")
    torch.testing.assert_close(model.stop_head.weight, ckpt["stop_head"]["weight"])
    tok = data.Tokenizer()
    samples = [data.tokenize_record(tok, r) for r in data.load_records(os.path.join(mini_dir, "prosqa_test.json"))]
    texts, passes = train.generate_texts(model, samples, 2, ckpt["meta"], "cpu", 24)
    assert len(texts) == 4 and passes >= 2


def test_init_from_a_cot_checkpoint_skips_stage_zero(mini_dir, tmp_path):
    run(mini_dir, tmp_path / "cot", "--method", "cot", "--num_epochs", "1")
    metrics = run(mini_dir, tmp_path / "coco", "--num_epochs", "3", "--init_from", str(tmp_path / "cot"))
    assert [(m["epoch"], m["stage"]) for m in metrics] == [(2, 1), (3, 2)]

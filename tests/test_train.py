"""train.py: the stage schedule, the learning-rate schedule, bucketing, optimizer resets, exact resume, DDP."""

import argparse
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY_FLAGS, gpt2_tokenizer, shared_file
import data
import tasks
from run import load_checkpoint, model_for, model_from_checkpoint, seen_keys, seen_tensor, vocabulary
import eval as ev
import train


def run(mini_dir, out, *extra):
    train.main(TINY_FLAGS + ["--data_dir", mini_dir, "--out_dir", str(out), *extra])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# --- schedules ---------------------------------------------------------------------------------------------

def test_stage_schedule_per_method():
    args = argparse.Namespace(method="coconut", epochs_per_stage=[5], max_latent_stage=6)  # as train.py passes it
    assert [train.stage_for_epoch(e, args) for e in (0, 4, 5, 29, 30, 34, 35, 49)] == [0, 0, 1, 5, 6, 6, 7, 7]
    for method, expected in [("cot", 0), ("no-cot", 0), ("pause", 0), ("no-curriculum", 7)]:
        args.method = method
        assert train.stage_for_epoch(23, args) == expected
    args.method = "icot"
    assert train.stage_for_epoch(23, args) == 23


def test_stage_lengths_may_differ_and_the_last_one_repeats():
    args = argparse.Namespace(method="coconut", epochs_per_stage=[3, 1], max_latent_stage=3)
    assert [train.stage_for_epoch(e, args) for e in range(8)] == [0, 0, 0, 1, 2, 3, 4, 4]
    args.epochs_per_stage = [2, 1, 3]
    assert [train.stage_for_epoch(e, args) for e in range(11)] == [0, 0, 1, 2, 2, 2, 3, 3, 3, 4, 4]


def test_learning_rate_warms_up_then_decays_to_min_lr():
    args = argparse.Namespace(lr_schedule="cosine", lr=1e-3, min_lr=1e-4, warmup_steps=10)
    lr = lambda step: train.learning_rate(step, 110, args)  # noqa: E731  (10 warmup + 100 decay steps)
    assert lr(0) == pytest.approx(1e-4) and lr(4) == pytest.approx(5e-4) and lr(9) == pytest.approx(1e-3)
    assert lr(10) == pytest.approx(1e-3)  # the peak, then half-way down the cosine after 50 more steps
    assert lr(60) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr(35) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi / 4)))
    assert lr(110) == pytest.approx(1e-4) and lr(500) == pytest.approx(1e-4)
    args.lr_schedule = "constant"
    assert {lr(s) for s in (0, 10, 60, 109)} == {1e-3}


def test_each_stage_restarts_the_schedule_with_its_optimizer(mini_dir, tmp_path, monkeypatch):
    calls = []
    real = train.learning_rate
    monkeypatch.setattr(train, "learning_rate", lambda step, n, args: calls.append((step, n)) or real(step, n, args))
    run(mini_dir, tmp_path / "run", "--num_epochs", "3", "--epochs_per_stage", "2", "1", "--lr_schedule",
        "cosine", "--warmup_steps", "1")
    # 8 samples, batches of 4: 2 steps an epoch; stage 0 spans epochs 1-2 (4 steps), stage 1 epoch 3
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (0, 2), (1, 2)]


# --- batches -----------------------------------------------------------------------------------------------

def test_bucketing_covers_every_example_once_with_less_padding():
    tok = gpt2_tokenizer()
    records = tasks.generate_prosqa({"train": 512}, seed=2, nodes=(6, 9), path=(2, 3))["train"]
    samples = [data.tokenize_record(tok, r) for r in records]
    examples = [data.build_example(s, 1, data.Curriculum("coconut", max_latent_stage=3)) for s in samples]

    def padding(bucket):
        batches = data.example_batches(examples, 16, bucket, random.Random(0), data.LATENT_ID)
        assert sorted(i for b in batches for i in b) == list(range(512)) and len(batches) == 32
        return sum(int((1 - data.collate([examples[i] for i in b])["attention_mask"]).sum()) for b in batches)
    assert padding(1) < 0.5 * padding(0)


def test_two_stage_run_rebuilds_the_optimizer_at_each_stage(mini_dir, tmp_path, monkeypatch):
    made = []
    real = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: made.append(1) or real(*a, **k))
    metrics = run(mini_dir, tmp_path / "run", "--num_epochs", "3", "--epochs_per_stage", "2")
    assert [m["stage"] for m in metrics] == [0, 0, 1]
    assert len(made) == 2  # one per stage, not per epoch
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["meta"]["method"] == "coconut" and ckpt["vocab"]["kind"] == "parent-child"  # ProsQA from scratch
    assert ckpt["epoch"] == 2 and ckpt["stage"] == 1
    assert json.load(open(tmp_path / "run" / "config.json"))["max_latent_stage"] == 1


def test_reset_optimizer_epoch_is_the_reference_rule_a_fresh_adamw_every_epoch(mini_dir, tmp_path, monkeypatch):
    """The reference's run.py rebuilds AdamW at the start of every epoch when its config sets reset_optimizer (its
    Coconut configs do); the paper's text, our default, only at a stage change. Same first epoch, then they part."""
    made = []
    real = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *a, **k: made.append(1) or real(*a, **k))
    flags = ("--num_epochs", "3", "--epochs_per_stage", "2", "--lr_schedule", "cosine", "--warmup_steps", "2")
    per_stage = run(mini_dir, tmp_path / "stage", *flags)
    assert len(made) == 2
    per_epoch = run(mini_dir, tmp_path / "epoch", *flags, "--reset_optimizer", "epoch")
    assert len(made) == 2 + 3  # one per epoch
    timing = ("seconds", "data_seconds", "wall")
    assert {k: v for k, v in per_epoch[0].items() if k not in timing} == \
        {k: v for k, v in per_stage[0].items() if k not in timing}
    assert per_epoch[1]["train_loss"] != per_stage[1]["train_loss"]


def test_loss_falls_when_overfitting_eight_samples(mini_dir, tmp_path):
    metrics = run(mini_dir, tmp_path / "fit", "--method", "cot", "--num_epochs", "8", "--batch_size", "2",
                  "--micro_batch", "2", "--lr", "1e-2")
    losses = [m["train_loss"] for m in metrics]
    assert losses[-1] < 0.5 * losses[0]


def test_the_frontier_loss_acts_only_where_there_are_thoughts(mini_dir, tmp_path):
    """--frontier_loss (beyond the paper): stage 0 has no thoughts, so its epoch is the plain run's to the bit;
    at stage 1 the thoughts are scored too and the weights part."""
    plain = run(mini_dir, tmp_path / "plain", "--num_epochs", "2")
    scored = run(mini_dir, tmp_path / "scored", "--num_epochs", "2", "--frontier_loss", "1")
    timing = ("seconds", "data_seconds", "wall")
    assert {k: v for k, v in scored[0].items() if k not in timing + ("train_frontier_loss",)} == \
        {k: v for k, v in plain[0].items() if k not in timing}
    # logged apart from the language loss, which stays comparable with the plain run's
    assert scored[0]["train_frontier_loss"] == 0.0 and scored[1]["train_frontier_loss"] > 0
    assert "train_frontier_loss" not in plain[1]
    a = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "scored" / "last.pt", weights_only=True)["model"]
    assert not torch.equal(a["transformer.wte.weight"], b["transformer.wte.weight"])


RESUMABLE = ["--num_epochs", "3", "--epochs_per_stage", "2", "1", "--uniform_prob", "0.5", "--lr_schedule", "cosine",
             "--warmup_steps", "1"]


@pytest.mark.parametrize("stop_after", [1, 2])  # mid-stage (its optimizer and schedule go on), at a stage change
def test_resume_equals_uninterrupted_bit_for_bit(mini_dir, tmp_path, stop_after):
    run(mini_dir, tmp_path / "a", *RESUMABLE)
    run(mini_dir, tmp_path / "b", *RESUMABLE, "--stop_after_epoch", str(stop_after))
    run(mini_dir, tmp_path / "b", *RESUMABLE, "--resume")
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [json.loads(l)["epoch"] for l in open(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(mini_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    flags = TINY_FLAGS + ["--data_dir", mini_dir, "--num_epochs", "2", "--lr_schedule", "cosine", "--warmup_steps", "1"]
    for cmd, out in (([sys.executable, "train.py"], "one"),
                     ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                       "127.0.0.1", "--master_port", str(free_port()), "train.py"], "two")):
        done = subprocess.run(cmd + flags + ["--out_dir", str(tmp_path / out)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    for k in one:
        torch.testing.assert_close(one[k], two[k], rtol=1e-5, atol=1e-6, msg=k)
    m1 = [json.loads(l) for l in open(tmp_path / "one" / "metrics.jsonl")]
    m2 = [json.loads(l) for l in open(tmp_path / "two" / "metrics.jsonl")]
    assert [m["val_acc"] for m in m1] == [m["val_acc"] for m in m2]  # validation sharded, then summed


def test_checkpoints_are_written_atomically(mini_dir, tmp_path, monkeypatch):
    run(mini_dir, tmp_path / "r", "--num_epochs", "1")
    before = torch.load(tmp_path / "r" / "last.pt", weights_only=True)

    def interrupted_mid_save(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt  # Ctrl-C while the checkpoint is being written

    monkeypatch.setattr(torch, "save", interrupted_mid_save)
    with pytest.raises(SystemExit) as stopped:
        run(mini_dir, tmp_path / "r", "--num_epochs", "2", "--resume")
    assert stopped.value.code == 130
    after = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert after["epoch"] == before["epoch"]
    assert sorted(os.listdir(tmp_path / "r")) == ["best.pt", "config.json", "last.pt", "metrics.jsonl"]


# --- checkpoints as evaluation sees them ---------------------------------------------------------------------

@pytest.mark.parametrize("vocab", ["words", "bpe"])
def test_a_compact_checkpoint_evaluates_as_it_validated_in_training(mini_dir, tmp_path, vocab):
    metrics = run(mini_dir, tmp_path / "run", "--num_epochs", "2", "--vocab", vocab, "--method", "cot")
    ev.main(["--ckpt", str(tmp_path / "run" / "last.pt"), "--split", "valid", "--out", str(tmp_path)])
    report = json.load(open(tmp_path / "eval_run_valid.json"))
    assert report["summary"]["accuracy"] == metrics[-1]["val_acc"]
    assert report["summary"]["mean_new_tokens"] == pytest.approx(metrics[-1]["val_new_tokens"])
    # the id map travels in the checkpoint: the dataset's own vocabulary, rebuilt identically
    texts = [t for s in ("train", "valid", "test") for r in data.load_records(os.path.join(mini_dir, f"prosqa_{s}.json"))
             for t in data.record_texts(r)]
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["vocab"] == data.Tokenizer.build(vocab, texts).state()
    assert ckpt["model_config"]["vocab_size"] == len(ckpt["vocab"]["pieces"]) + 4  # eos and the three Coconut rows


def test_the_front_door_forks_the_shipped_cot_and_scratch_starts_anew(monkeypatch):
    """`python train.py --dataset prosqa --c 1` on a CPU: the shipped CoT's weights, shape and vocabulary, stage 0
    skipped, with a tenth of the samples at a random stage; --init_from scratch: the laptop recipe from scratch."""
    monkeypatch.chdir(ROOT)
    door = train.get_args(["--dataset", "prosqa", "--c", "1"])
    notes, init = train.resolve(door, "cpu")
    assert door.init_from == os.path.join("models", "prosqa-mini-cot") and init["meta"]["method"] == "cot"
    assert (door.model, door.n_layer, door.n_embd, door.vocab) == ("tiny", 4, 128, "parent-child")
    assert (door.lr, door.uniform_prob, door.start_epoch, door.num_epochs) == (1.5e-3, 0.1, 3, 8)
    assert notes[0].endswith("its weights start this run; --init_from scratch starts from a new model")
    scratch = train.get_args(["--dataset", "prosqa", "--c", "1", "--init_from", "scratch"])
    assert train.resolve(scratch, "cpu")[1] is None
    assert (scratch.init_from, scratch.model, scratch.lr, scratch.uniform_prob, scratch.start_epoch) == (
        None, "tiny", 1.5e-3, 0.0, 0)
    given = train.get_args(["--dataset", "prosqa", "--data_dir", "data"])  # the paper's data: no fork, no laptop
    assert train.resolve(given, "cpu")[1] is None and given.lr == 1e-4


def test_init_from_a_cot_checkpoint_skips_stage_zero_and_keeps_its_vocabulary(mini_dir, tmp_path):
    run(mini_dir, tmp_path / "cot", "--method", "cot", "--num_epochs", "1", "--epochs_per_stage", "2")
    metrics = run(mini_dir, tmp_path / "coco", "--num_epochs", "4", "--epochs_per_stage", "2", "1",
                  "--init_from", str(tmp_path / "cot"))
    assert [(m["epoch"], m["stage"]) for m in metrics] == [(3, 1), (4, 2)]
    cot = torch.load(tmp_path / "cot" / "last.pt", weights_only=True)
    coco = torch.load(tmp_path / "coco" / "last.pt", weights_only=True)
    assert coco["vocab"] == cot["vocab"]


def test_a_fork_of_a_cot_starts_the_first_thought_as_the_step_opener(mini_dir, tmp_path):
    """Thoughts after a CoT checkpoint (which never read <|start-latent|>): that row, whose last hidden state is the
    first thought, starts as a copy of the token opening most steps, "Every" on ProsQA; every other weight is the
    checkpoint's. --start_latent checkpoint, or a fork without thoughts, keeps the row as it was."""
    run(mini_dir, tmp_path / "cot", "--method", "cot", "--num_epochs", "1", "--epochs_per_stage", "2")
    said = []

    def fork(*flags):
        args = train.get_args(TINY_FLAGS + ["--data_dir", mini_dir, "--init_from", str(tmp_path / "cot"), *flags])
        init = train.resolve(args, "cpu")[1]
        tok = data.Tokenizer.from_state(init["vocab"])
        samples = [data.tokenize_record(tok, r) for r in data.load_records(os.path.join(mini_dir, "prosqa_train.json"))]
        weights = model_for(args, tok, "cpu", init, None, samples, said.append).model.state_dict()
        return weights, init["model"], tok

    coconut, cot, tok = fork()
    start, every = tok.special.start, tok.encode("Every")[0]
    assert torch.equal(coconut["transformer.wte.weight"][start], cot["transformer.wte.weight"][every])
    assert not torch.equal(cot["transformer.wte.weight"][start], cot["transformer.wte.weight"][every])
    rows = [i for i in range(tok.vocab_size) if i != start]
    assert torch.equal(coconut["transformer.wte.weight"][rows], cot["transformer.wte.weight"][rows])
    assert all(torch.equal(coconut[k], cot[k]) for k in cot if k not in ("transformer.wte.weight", "lm_head.weight"))
    assert said == ["<|start-latent|> starts as a copy of 'Every', the token opening most steps (--start_latent "
                    "checkpoint keeps the checkpoint's row)"]
    for flags in (["--start_latent", "checkpoint"], ["--method", "cot"], ["--method", "no-thought"]):
        kept, cot, _ = fork(*flags)
        assert all(torch.equal(kept[k], cot[k]) for k in cot)
    assert len(said) == 1


def test_a_checkpoint_started_on_new_data_gains_rows_for_its_words_and_reads_the_old_ones_as_before():
    """--init_from the ProsQA CoT on ProntoQA: the vocabulary is the checkpoint's, then a row for each ProntoQA word
    it never saw (as GPT-2 gains Coconut's three); every old row moves with its piece, so on a text the checkpoint
    could read the logits of its own pieces are the same bit for bit."""
    cot = os.path.join(ROOT, "models", "prosqa-mini-cot")
    args = train.get_args(["--dataset", "prontoqa", "--stream", "1", "--path", "1", "2", "--method", "cot",
                           "--init_from", cot, "--device", "cpu"])
    init = train.resolve(args, "cpu")[1]
    old_co, old = model_from_checkpoint(init, "cpu")
    records = tasks.generate_prontoqa({"valid": 20}, seed=1, hops=(1, 2))["valid"]
    said = []
    tok = vocabulary(args, [t for r in records for t in data.record_texts(r)], init, said.append)
    new = tok.pieces[len(old.pieces):]
    assert tok.pieces[:len(old.pieces)] == old.pieces and "Every _ is _ ." in new and "Every" not in new
    assert said[0].startswith(f"vocabulary: {len(new)} words {init['path']} never saw get new rows")
    co = model_for(args, tok, "cpu", init, None, [], said.append)
    text = "Tom is a wumpus.\nEvery wumpus is a yumpus.\n### yumpus"
    with torch.no_grad():
        before = old_co(torch.tensor([old.encode(text)])).logits
        after = co(torch.tensor([tok.encode(text)])).logits
    kept = [tok.row_of[p] for p in old.pieces] + list(tok.special)
    assert old.encode(text) == tok.encode(text) and torch.equal(after[..., kept], before)


# --- the endless stream of generated ProsQA-mini (--stream 1, the laptop recipe's data) -------------------------

PROSQA_EPOCH = tasks.prosqa_epoch
STREAM = ["--device", "cpu", "--init_from", "scratch", "--n_layer", "1", "--n_embd", "32", "--n_head", "2",
          "--train_size", "24", "--val_size", "20", "--num_epochs", "4", "--epochs_per_stage", "2", "1", "--batch_size",
          "4", "--micro_batch", "4", "--max_new_tokens", "24", "--uniform_prob", "0.5"]


def stream_run(tmp_path, monkeypatch, out, *extra):
    """The laptop recipe's data path (no --data_dir: generated into ./data) at a tiny size; returns every training
    question the run drew, per epoch, and its metrics."""
    monkeypatch.chdir(tmp_path)
    drawn = []
    monkeypatch.setattr(tasks, "prosqa_epoch", lambda *a: drawn.append(PROSQA_EPOCH(*a)) or drawn[-1])
    train.main(STREAM + ["--out_dir", out, *extra])
    with open(tmp_path / out / "metrics.jsonl") as f:
        return [[r["question"] for r in epoch] for epoch in drawn], [json.loads(line) for line in f]


def test_prontoqa_streams_fresh_questions_held_out_from_its_test_with_a_row_for_every_official_word(tmp_path,
                                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    drawn, prontoqa_epoch = [], tasks.prontoqa_epoch
    monkeypatch.setattr(tasks, "prontoqa_epoch", lambda *a: drawn.append(prontoqa_epoch(*a)) or drawn[-1])
    train.main(["--dataset", "prontoqa", "--model", "tiny", "--stream", "1", "--method", "cot", "--device", "cpu",
                "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--train_size", "8", "--val_size", "4",
                "--num_epochs", "2", "--batch_size", "4", "--micro_batch", "4", "--max_new_tokens", "8",
                "--out_dir", "run"])
    questions = {r["question"] for epoch in drawn for r in epoch}
    assert len(drawn) == 2 and len(questions) == 16 and not any(map(tasks.is_held_out, questions))
    held_out = {r["question"] for s in ("valid", "test")
                for r in data.load_records(str(tmp_path / "data" / "prontoqa-s0" / f"prontoqa_{s}.json"))}
    assert len(held_out) == 1000 and all(map(tasks.is_held_out, held_out)) and not held_out & questions
    tok = data.Tokenizer.from_state(load_checkpoint("run")["vocab"])
    official = tasks.prontoqa_file(shared_file("prontoqa_5hop_0shot_random_sample.json"))
    assert all(tok.encode(t) for r in official for t in data.record_texts(r))  # no word without a row


def test_each_epoch_trains_on_fresh_questions_disjoint_from_the_held_out_ones(tmp_path, monkeypatch):
    drawn, metrics = stream_run(tmp_path, monkeypatch, "run")
    questions = [q for epoch in drawn for q in epoch]
    assert len(drawn) == 4 and len(set(questions)) == len(questions) == 96
    held_out = {r["question"] for s in ("valid", "test") for r in data.load_records(
        str(tmp_path / "data" / "prosqa-mini-n6-9-p2-3-s0" / f"prosqa_{s}.json"))}
    assert len(held_out) == 1000 and not held_out & set(questions)
    assert [(m["questions_seen"], m["distinct_questions"]) for m in metrics] == [(24, 24), (48, 48), (72, 72), (96, 96)]
    assert all(m["val_n_shortcut"] + m["val_n_no_shortcut"] == m["val_n"] == 20 for m in metrics)


def test_question_keys_go_into_a_checkpoint_and_come_back_whole():
    keys = {0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, tasks.question_key("Is Tom a wumpus or jelpus?")}
    assert seen_tensor(keys).dtype == torch.int64 and seen_keys(seen_tensor(keys)) == keys


def test_a_fixed_set_repeats_with_stream_0(tmp_path, monkeypatch):
    drawn, metrics = stream_run(tmp_path, monkeypatch, "fixed", "--stream", "0")
    assert len(drawn) == 1  # drawn once, trained on every epoch
    assert [(m["questions_seen"], m["distinct_questions"]) for m in metrics][-1] == (96, 24)


@pytest.mark.parametrize("stop_after,keys_in_checkpoint", [(1, True), (2, True), (2, False)])
def test_resume_with_the_stream_equals_uninterrupted_bit_for_bit(tmp_path, monkeypatch, stop_after,
                                                                 keys_in_checkpoint):
    """last.pt keeps the keys of every question trained on, so a resumed run draws only the epochs it trains; a
    checkpoint without them (written before they were kept) regenerates the earlier epochs, to the same end."""
    whole, _ = stream_run(tmp_path, monkeypatch, "a")
    stream_run(tmp_path, monkeypatch, "b", "--stop_after_epoch", str(stop_after))
    last = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert seen_keys(last["seen"]) == {tasks.question_key(q) for epoch in whole[:stop_after] for q in epoch}
    if not keys_in_checkpoint:
        del last["seen"]
        torch.save(last, tmp_path / "b" / "last.pt")
    resumed, metrics = stream_run(tmp_path, monkeypatch, "b", "--resume")
    assert resumed == (whole if not keys_in_checkpoint else whole[stop_after:])
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]


def test_a_generated_runs_questions_come_back_where_it_is_evaluated_and_its_export_evaluates_alike(tmp_path,
                                                                                                  monkeypatch):
    stream_run(tmp_path, monkeypatch, "run", "--num_epochs", "2")
    folder = tmp_path / "data" / "prosqa-mini-n6-9-p2-3-s0"
    test_split = (folder / "prosqa_test.json").read_text()
    shutil.rmtree(tmp_path / "data")  # e.g. a run folder copied to another machine
    ev.main(["--ckpt", "run", "--split", "test", "--out", "a"])
    assert (folder / "prosqa_test.json").read_text() == test_split
    ev.main(["--ckpt", "run", "--export", "models/run"])
    shipped = torch.load(tmp_path / "models" / "run" / "best.pt", weights_only=True)
    ev.main(["--ckpt", "models/run", "--split", "test", "--out", "b"])
    assert "optimizer" not in shipped and sorted(os.listdir(tmp_path / "models" / "run")) == [
        "best.pt", "config.json", "metrics.jsonl"]  # evaluating a shipped model writes nothing into it
    a, b = (json.load(open(tmp_path / f / "eval_run_test.json"))["rows"] for f in ("a", "b"))
    assert a == b
    with open(tmp_path / "models" / "run" / "config.json") as f:  # no machine's path: the recipe's run folder
        assert json.load(f)["out_dir"] == shipped["args"]["out_dir"] == "out/run"

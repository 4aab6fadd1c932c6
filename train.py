"""Training: the multi-stage curriculum of Coconut and every baseline of the paper's Table 1 (paper §3-4).

Stage k replaces the first k reasoning steps by k*c continuous thoughts; the optimizer is rebuilt whenever
the stage changes (§3 "Training Procedure").

    python train.py --dataset prosqa --c 1                      # the front door (a laptop recipe on a CPU)
    python train.py --dataset prosqa --model gpt2               # the paper's setup, on a GPU
    torchrun --nproc_per_node 4 train.py --dataset prosqa --model gpt2
    python train.py --dataset prosqa --method cot               # any row of Table 1: see --method
"""

import argparse
import json
import math
import os
import random
import shlex
import sys
import time
from collections import namedtuple
from types import SimpleNamespace

import torch
import torch.distributed as dist

import data
import tasks
import weights
from run import (LAPTOP, LAPTOP_HELD_OUT, PAPER, TINY, ArgumentParser, accuracies, accuracy_counts, autocast,
                 build_model, checkpoint_meta, checkpoint_state, fail, fault_point, generate_texts, is_correct,
                 load_checkpoint, load_weights, need, pick_device, save_checkpoint, split_text)


def get_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="prosqa", help="prosqa | prontoqa | gsm8k")
    p.add_argument("--method", default="coconut", help=" | ".join(data.METHODS))
    p.add_argument("--c", type=int, default=None, help="continuous thoughts per reasoning step")
    p.add_argument("--max_latent_stage", type=int, default=None)
    p.add_argument("--epochs_per_stage", type=int, nargs="+", default=None,
                   help="epochs of each stage; the last value holds for the later stages (e.g. 3 1: stage 0 "
                        "three epochs, every later stage one)")
    p.add_argument("--num_epochs", type=int, default=None)
    p.add_argument("--pad_latent_to_max", type=int, default=1, help="past the last stage keep max_stage*c thoughts")
    p.add_argument("--uniform_prob", type=float, default=None,
                   help="probability of a random stage per sample (0.3: the §5 analysis model)")
    p.add_argument("--latent_stop", default="fixed", choices=("fixed", "classifier"),
                   help="leave latent mode after a fixed number of thoughts, or when a trained classifier says so")
    p.add_argument("--icot_tokens_per_stage", type=int, default=8, help="--method icot: tokens removed per epoch")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lr_schedule", default=None, choices=("constant", "cosine"),
                   help="constant (the paper's), or per stage: linear warmup, then cosine decay to --min_lr")
    p.add_argument("--warmup_steps", type=int, default=None, help="--lr_schedule cosine: warmup after each reset")
    p.add_argument("--min_lr", type=float, default=0.0, help="--lr_schedule cosine: the rate at each stage's end")
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--grad_clip", type=float, default=None, help="clip the gradient norm (0: off, as the paper's)")
    p.add_argument("--batch_size", type=int, default=None, help="effective batch (paper: 128)")
    p.add_argument("--micro_batch", type=int, default=None, help="per device per step; the rest is accumulation")
    p.add_argument("--bucket", type=int, default=1, help="batch samples of similar length (less padding)")
    p.add_argument("--model", default="auto", help="auto | tiny | gpt2 | gpt2-medium | ... | a Hugging Face folder")
    p.add_argument("--vocab", default="auto", choices=("auto",) + data.VOCABS,
                   help="auto: words for a model from scratch on ProsQA/ProntoQA, else gpt2 (see data.Tokenizer)")
    p.add_argument("--n_layer", type=int, default=TINY["n_layer"], help="--model tiny: layers")
    p.add_argument("--n_embd", type=int, default=TINY["n_embd"], help="--model tiny: width")
    p.add_argument("--n_head", type=int, default=TINY["n_head"], help="--model tiny: attention heads")
    p.add_argument("--init_std", type=float, default=None, help="--model tiny: std of the initial weights "
                   "(GPT-2's 0.02 is tuned for width 768)")
    p.add_argument("--init_from", default=None, help="a checkpoint (.pt or run folder) to start from, e.g. CoT")
    p.add_argument("--start_epoch", type=int, default=None,
                   help="first epoch to train; with --init_from it defaults to the length of stage 0: the "
                        "checkpoint already is stage 0 (the paper's GSM8k recipe)")
    p.add_argument("--bf16", type=int, default=1, help="bf16 autocast on CUDA (0: fp32, as the reference's configs)")
    p.add_argument("--compile", type=int, default=0, help="torch.compile the GPT (nanoGPT's switch; bench.py "
                   "--compile measures what it buys)")
    p.add_argument("--device", default=None, help="cuda | mps | cpu (default: the best available)")
    p.add_argument("--data_dir", default=None, help="where <dataset>_{train,valid,test}.json live")
    p.add_argument("--train_size", type=int, default=None, help="use the first N training records (--stream 1: "
                   "fresh questions per epoch)")
    p.add_argument("--stream", type=int, default=None, help="generated ProsQA: 1 draws --train_size fresh questions "
                   "every epoch, none ever repeated (the default); 0 repeats one fixed set of that size")
    p.add_argument("--val_size", type=int, default=None, help="use the first N validation records")
    p.add_argument("--nodes", type=int, nargs=2, default=None, help="generated ProsQA graph sizes (min max)")
    p.add_argument("--path", type=int, nargs=2, default=None, help="generated ProsQA path lengths (min max)")
    p.add_argument("--max_new_tokens", type=int, default=None)
    p.add_argument("--out_dir", default=None, help="default out/<dataset>-<method>-c<c>")
    p.add_argument("--resume", action="store_true", help="continue from out_dir/last.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop_after_epoch", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a kill
    return p.parse_args(argv)


def resolve(args, device):
    """Fill unset flags: the paper's recipe, or the laptop recipe when the model is the tiny one. Returns the
    notes to show once every flag has been checked."""
    notes = []
    if args.dataset not in tasks.DATASETS:
        fail(f"--dataset {args.dataset!r}: expected one of {', '.join(tasks.DATASETS)}")
    if args.method not in data.METHODS:
        fail(f"--method {args.method!r}: expected one of {', '.join(data.METHODS)}")
    if args.model == "auto":
        if device == "cpu":
            args.model = "tiny"
            notes.append("model: tiny (a GPT-2-shaped model from scratch), since no GPU is present; the paper's "
                         "setup is --model gpt2 on a GPU")
        else:
            try:
                weights.download_gpt2("gpt2")
                args.model = "gpt2"
            except ConnectionError as e:
                args.model = "tiny"
                notes.append(f"model: tiny, since GPT-2's weights could not be fetched ({e}); --model gpt2 needs them")
    if args.model not in ("tiny", *weights.HF_REPOS) and not os.path.isdir(args.model):
        fail(f"--model {args.model!r}: expected auto, tiny, {', '.join(weights.HF_REPOS)} or a Hugging Face folder")
    laptop = args.model == "tiny" and args.dataset == "prosqa" and args.data_dir is None
    recipe = dict(PAPER[args.dataset], lr=1e-4, lr_schedule="constant", warmup_steps=0, grad_clip=0.0, init_std=0.02,
                  uniform_prob=0.0, batch_size=128,
                  micro_batch=32 if device != "cpu" else 8)
    if laptop:
        recipe.update(LAPTOP)
    for k, v in recipe.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.vocab == "auto":
        args.vocab = "words" if args.model == "tiny" and args.dataset != "gsm8k" else "gpt2"
    args.generated_data = laptop
    if args.stream is None:
        args.stream = int(laptop)
    if laptop:
        args.data_dir = f"data/prosqa-mini-n{args.nodes[0]}-{args.nodes[1]}-p{args.path[0]}-{args.path[1]}-s{args.seed}"
        training = (f"{args.train_size} fresh questions every epoch (none ever repeated)" if args.stream else
                    f"one fixed set of {args.train_size} questions, repeated every epoch (--stream 0)")
        notes.append(f"data: ProsQA-mini ({args.nodes[0]}-{args.nodes[1]} nodes, paths of {args.path[0]}-"
                     f"{args.path[1]} steps) from tasks.py's generator: {training}; validation and test questions "
                     f"held out in {args.data_dir}. A laptop recipe; the paper's ProsQA is --model gpt2 "
                     "--data_dir data")
    if args.start_epoch is None:
        args.start_epoch = args.epochs_per_stage[0] if args.init_from else 0
    args.data_dir = args.data_dir or "data"
    args.out_dir = args.out_dir or os.path.join("out", f"{args.dataset}-{args.method}-c{args.c}")
    return notes


def check_args(args, world):
    """Every flag, before any work: one line naming the flag, its value, and what is allowed."""
    for flag in ("c", "num_epochs", "batch_size", "micro_batch", "max_new_tokens", "icot_tokens_per_stage",
                 "n_layer", "n_embd", "n_head", "train_size", "val_size"):
        value = getattr(args, flag)
        need(value is None or value >= 1, f"--{flag}", value, "must be at least 1")
    per_stage = args.epochs_per_stage
    need(all(e >= 1 for e in per_stage), "--epochs_per_stage", " ".join(map(str, per_stage)),
         "each stage lasts at least 1 epoch")
    need(args.max_latent_stage >= 0, "--max_latent_stage", args.max_latent_stage, "must be 0 or more")
    need(0 <= args.uniform_prob <= 1, "--uniform_prob", args.uniform_prob, "a probability, from 0 to 1")
    need(args.lr > 0, "--lr", args.lr, "must be greater than 0")
    need(0 <= args.min_lr <= args.lr, "--min_lr", args.min_lr, f"must be from 0 to --lr ({args.lr})")
    need(args.warmup_steps >= 0, "--warmup_steps", args.warmup_steps, "must be 0 or more")
    need(args.weight_decay >= 0, "--weight_decay", args.weight_decay, "must be 0 or more")
    need(args.init_std > 0, "--init_std", args.init_std, "must be greater than 0")
    need(args.grad_clip >= 0, "--grad_clip", args.grad_clip, "must be 0 (off) or more")
    for flag in ("pad_latent_to_max", "bf16", "bucket", "compile", "stream"):
        need(getattr(args, flag) in (0, 1), f"--{flag}", getattr(args, flag), "0 or 1")
    need(args.n_embd % args.n_head == 0, "--n_head", args.n_head, f"must divide --n_embd {args.n_embd}")
    need(args.batch_size % (args.micro_batch * world) == 0, "--batch_size", args.batch_size,
         f"is not a multiple of --micro_batch {args.micro_batch}" + (f" x {world} processes" if world > 1 else ""))
    need(0 <= args.start_epoch < args.num_epochs, "--start_epoch", args.start_epoch,
         f"must be from 0 to --num_epochs - 1 ({args.num_epochs - 1})")
    thoughts = args.max_latent_stage * args.c
    need(thoughts < TINY["block_size"], "--max_latent_stage", args.max_latent_stage,
         f"{thoughts} thoughts (x --c {args.c}) do not fit a context of {TINY['block_size']}")
    feedback = [m for m, row in data.METHODS.items() if row.slots == "thoughts"]
    need(args.latent_stop == "fixed" or args.method in feedback, "--latent_stop", args.latent_stop,
         f"only for --method {' or '.join(feedback)}, not {args.method}")
    need(args.vocab == "gpt2" or args.model == "tiny", "--vocab", args.vocab,
         f"a pretrained model ({args.model}) keeps GPT-2's vocabulary: --vocab gpt2")
    need(args.generated_data or not args.stream, "--stream", args.stream,
         "draws generated ProsQA-mini: only for --model tiny --dataset prosqa without --data_dir")
    if args.generated_data:
        try:
            tasks.check_generator_flags(args.nodes, args.path)
        except data.DataError as e:
            fail(str(e))
    need(not os.path.isfile(args.out_dir), "--out_dir", args.out_dir, "is a file, not a folder")
    if not args.resume and os.path.exists(os.path.join(args.out_dir, "last.pt")):
        fail(f"{args.out_dir} already holds a run ({os.path.join(args.out_dir, 'last.pt')}); pass --resume to "
             "continue it, or --out_dir for a new one")
    if args.resume and not os.path.exists(os.path.join(args.out_dir, "last.pt")):
        fail(f"--resume: {os.path.join(args.out_dir, 'last.pt')} does not exist")


def stage_for_epoch(epoch, args):
    """The curriculum: stage k for the epochs_per_stage[k] epochs after stage k-1's (the last length
    repeats), capped one past the last latent stage."""
    # --- exercise 5: the stage schedule ---
    stages = data.METHODS[args.method].stages
    if stages == "none":
        return 0
    if stages == "epoch":  # iCoT: one removal step per epoch
        return epoch
    if stages == "last":  # w/o curriculum: the final stage from the start
        return args.max_latent_stage + 1
    per_stage = args.epochs_per_stage
    end = 0
    for stage in range(args.max_latent_stage + 1):
        end += per_stage[min(stage, len(per_stage) - 1)]
        if epoch < end:
            return stage
    return args.max_latent_stage + 1
    # --- end of exercise 5 ---


def learning_rate(step, steps_in_stage, args):
    """The rate for optimizer step `step` of a stage. --lr_schedule constant is the paper's. cosine: a linear
    warmup after each reset (a fresh AdamW has no moment estimates yet: full steps at once made the loss
    NaN at a stage change with --lr 3e-3), then cosine decay to --min_lr at the stage's last step."""
    if args.lr_schedule == "constant":
        return args.lr
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = min(1.0, (step - args.warmup_steps) / max(1, steps_in_stage - args.warmup_steps))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))


def load_splits(args, log):
    """The run's training records (None when --stream 1 draws them per epoch), validation records, and the
    texts the vocabulary is built from. A compact vocabulary holds every word of the dataset's three split
    files (a name seen only in a question it is later asked gets an untrained row instead of failing), or, on
    generated ProsQA, every word the generator can write."""
    if args.generated_data:
        # fixed sizes for the held-out splits: the records (one random stream) must not depend on --val_size
        paths = tasks.ensure_held_out(args.data_dir, args.seed, args.nodes, args.path, LAPTOP_HELD_OUT)
        held_out = {s: data.load_records(p, graph=True) for s, p in paths.items()}
        texts = tasks.prosqa_vocabulary_texts() + [t for rs in held_out.values() for r in rs
                                                   for t in data.record_texts(r)]
        train = None if args.stream else tasks.prosqa_epoch(args.seed, 0, args.train_size, tuple(args.nodes),
                                                           tuple(args.path), set())
        sources = {"train": "the generated training stream", "valid": paths["valid"]}
        return Splits(train, held_out["valid"][: args.val_size], texts, sources)
    paths = tasks.ensure_dataset(args.dataset, args.data_dir, notice=log)
    graph = args.dataset == "prosqa"
    splits = {s: data.load_records(p, graph) for s, p in paths.items()}
    texts = [t for records in splits.values() for r in records for t in data.record_texts(r)]
    return Splits(splits["train"][: args.train_size], splits["valid"][: args.val_size], texts, paths)


def check_lengths(named_samples, stages, args, tok, block_size):
    """A sequence longer than the model's context is an error before training starts: one line naming the
    first such record, as a training sequence of stage 0 or of the last stage plus --max_new_tokens."""
    final_stage = stages[-1]
    too_long = []
    for source, samples in named_samples:
        for stage in sorted({0, final_stage}):
            for i, ex in enumerate(build_examples(samples, stage, args, tok)):
                n = len(ex["input_ids"]) + (args.max_new_tokens if stage == final_stage else 0)
                if n > block_size:
                    too_long.append((source, i, n))
    if too_long:
        source, i, n = too_long[0]
        more = len({(s, j) for s, j, _ in too_long}) - 1
        fail(f"{source}: record {i}: {n} tokens (sequence + --max_new_tokens {args.max_new_tokens}) exceed the "
             f"model's context of {block_size}" + (f"; {more} more records too" if more else ""))


Splits = namedtuple("Splits", ["train", "valid", "texts", "sources"])


def stream_samples(args, epoch, tok, seen):
    """--stream 1: epoch `epoch`'s fresh training questions, tokenized (their keys join `seen`)."""
    records = tasks.prosqa_epoch(args.seed, epoch, args.train_size, tuple(args.nodes), tuple(args.path), seen)
    return [data.tokenize_record(tok, r) for r in records]


def write_metrics(history, path):
    """metrics.jsonl, one line per epoch, rewritten whole from the history the checkpoint carries."""
    data.write_atomic(path, lambda f: f.write("".join(json.dumps(m) + "\n" for m in history).encode("utf-8")))


def resumed_metrics(ckpt, path):
    """The metrics of the epochs a checkpoint holds: its own history, or (a checkpoint written before it carried
    one) the file's lines up to its epoch, each epoch once."""
    if "metrics" in ckpt:
        return list(ckpt["metrics"])
    lines = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    m = json.loads(line)
                    lines[m["epoch"]] = m
    return [lines[e] for e in sorted(lines) if e <= ckpt["epoch"] + 1]


def interrupted(epoch, saved_epoch, last_path):
    """Ctrl-C: one line saying what is on disk and the command that continues."""
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    command = shlex.join(["python", os.path.basename(sys.argv[0]) or "train.py", *argv])
    if saved_epoch is None:
        print(f"interrupted in epoch {epoch + 1}, before its first checkpoint: nothing to resume; {command} starts "
              "again", file=sys.stderr)
    else:
        print(f"interrupted in epoch {epoch + 1}; {last_path} holds epoch {saved_epoch + 1}: {command} --resume "
              "continues", file=sys.stderr)


def micro_batches(batches, examples, args, world, rank, tok):
    """Split each global batch into micro-batches; rank r takes its consecutive share.

    One process with accumulation A*W sees the same micro-batches as W processes with accumulation A, so
    their averaged gradients agree.
    """
    per_rank = args.batch_size // world
    for batch in batches:
        step = batch[rank * per_rank:(rank + 1) * per_rank]
        yield [data.collate([examples[j] for j in step[k:k + args.micro_batch]], tok.eos_id, tok.special.latent)
               for k in range(0, len(step), args.micro_batch) if step[k:k + args.micro_batch]]


def build_examples(samples, stage, args, tok, rng=None):
    """Training examples at `stage` of the run's curriculum (data.Curriculum of its flags)."""
    cur = data.curriculum_of(vars(args))
    return [data.build_example(s, stage, cur, rng, tok.special) for s in samples]


@torch.no_grad()
def evaluate(coconut, tok, valid_records, valid_tok, stage, args, device, world=1, rank=0):
    """Validation loss and generation accuracy at `stage`, sharded over ranks and summed; on ProsQA the
    accuracy also split by the one-hop shortcut (run.accuracies)."""
    coconut.eval()
    meta = checkpoint_meta(args)
    loss_sum, loss_n, new_tokens, correct = 0.0, 0, 0, []
    idx = list(range(rank, len(valid_tok), world))
    bs = args.micro_batch
    for i in range(0, len(idx), bs):
        chunk = idx[i:i + bs]
        examples = build_examples([valid_tok[j] for j in chunk], stage, args, tok)
        batch = {k: v.to(device) for k, v in data.collate(examples, tok.eos_id, tok.special.latent).items()}
        with autocast(device, args.bf16):
            out = coconut(**batch, return_logits=False)
        scored = int((batch["labels"][:, 1:] != -100).sum())
        loss_sum += float(out.loss) * scored
        loss_n += scored
        texts, _ = generate_texts(coconut, tok, [valid_tok[j] for j in chunk], stage, meta, device,
                                  args.max_new_tokens, bf16=args.bf16)
        for (text, n_new), j in zip(texts, chunk):
            correct.append(is_correct(text, valid_records[j]["answer"]))
            new_tokens += n_new
    counts = accuracy_counts([valid_records[j] for j in idx], correct)
    totals = torch.tensor([loss_sum, loss_n, new_tokens, *counts.values()], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(totals)
    loss_sum, loss_n, new_tokens, *summed = totals.tolist()
    acc = accuracies(dict(zip(counts, map(int, summed))))
    return {"val_loss": loss_sum / max(loss_n, 1), "val_new_tokens": new_tokens / max(acc["n"], 1),
            **{("val_acc" + k[len("accuracy"):]) if k.startswith("accuracy") else "val_" + k: v
               for k, v in acc.items()}}


def start_processes(args):
    """(ddp, rank, world, device): one process, or one of torchrun's (DDP)."""
    if "RANK" not in os.environ:
        return False, 0, 1, pick_device(args.device)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = f"cuda:{int(os.environ['LOCAL_RANK'])}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    return True, dist.get_rank(), dist.get_world_size(), device


def setup(args, device, world, rank, log):
    """Every input read and checked before anything is written to the run folder; then the folder. Returns the
    run's state: the model, vocabulary, data, stage of each epoch, and where a resumed run stands."""
    r = SimpleNamespace(last_path=os.path.join(args.out_dir, "last.pt"),
                        best_path=os.path.join(args.out_dir, "best.pt"),
                        metrics_path=os.path.join(args.out_dir, "metrics.jsonl"))
    resumed = load_checkpoint(r.last_path) if args.resume else None
    init = load_checkpoint(args.init_from) if args.init_from else None
    if resumed and resumed["meta"]["method"] != args.method:
        fail(f"--resume: {r.last_path} was trained with --method {resumed['meta']['method']}, not {args.method}")
    splits = load_splits(args, log)
    r.train_records, r.valid_records = splits.train, splits.valid
    inherited = resumed or init  # a checkpoint's rows mean its vocabulary's pieces: keep them
    if inherited:
        r.tok = data.Tokenizer.from_state(inherited["vocab"])
        if r.tok.kind != args.vocab:
            fail(f"--vocab {args.vocab}: {inherited['path']} was trained with --vocab {r.tok.kind}")
    else:
        r.tok = data.Tokenizer.build(args.vocab, splits.texts)
    r.valid_tok = [data.tokenize_record(r.tok, rec) for rec in r.valid_records]
    r.coconut = build_model(args, r.tok, device)
    if init:
        if init["model_config"]["vocab_size"] != r.coconut.model.config.vocab_size:
            fail(f"--init_from {init['path']}: vocabulary of {init['model_config']['vocab_size']} rows, this "
                 f"model has {r.coconut.model.config.vocab_size}")
        load_weights(r.coconut, init)
    if resumed:
        load_weights(r.coconut, resumed)
    if args.compile:  # compiles the forward in place: parameters, state_dict and the thought loop are unchanged
        r.coconut.model.compile(dynamic=True)
    r.start_epoch, r.best_acc, r.saved_epoch = args.start_epoch, -1.0, None
    r.optimizer_stage, r.optimizer_state = None, None
    if resumed:
        r.start_epoch, r.best_acc, r.saved_epoch = resumed["epoch"] + 1, resumed["best_acc"], resumed["epoch"]
        r.optimizer_stage, r.optimizer_state = resumed["stage"], resumed["optimizer"]
    # --stream 1: the keys of every question of epochs 0..e-1 (regenerated on resume), so epoch e repeats none
    r.seen = set()
    if r.train_records is None:
        for epoch in range(r.start_epoch):
            tasks.prosqa_epoch(args.seed, epoch, args.train_size, tuple(args.nodes), tuple(args.path), r.seen)
        r.train_tok = stream_samples(args, r.start_epoch, r.tok, r.seen)  # the first epoch's, checked below
    else:
        r.train_tok = [data.tokenize_record(r.tok, rec) for rec in r.train_records]
    r.stages = [stage_for_epoch(e, args) for e in range(args.num_epochs)]
    check_lengths([(splits.sources["train"], r.train_tok), (splits.sources["valid"], r.valid_tok)], r.stages, args,
                  r.tok, r.coconut.model.config.block_size)
    # The checkpoint is the commit point: it carries every epoch's metrics line, and metrics.jsonl is rewritten
    # from it, so after a kill at any moment the file holds each epoch up to the checkpoint's exactly once.
    r.history = resumed_metrics(resumed, r.metrics_path) if resumed else []
    if rank == 0:
        if os.path.isdir(args.out_dir):  # what a killed save left behind (data.write_atomic's temporary files)
            for name in os.listdir(args.out_dir):
                if name.endswith(".tmp"):
                    os.remove(os.path.join(args.out_dir, name))
        data.write_json_atomic(vars(args), os.path.join(args.out_dir, "config.json"), indent=1)
        write_metrics(r.history, r.metrics_path)
        log("config: " + " ".join(f"{k}={v}" for k, v in vars(args).items()))
        log(f"device {device}{' bf16' if device.startswith('cuda') and args.bf16 else ''}, {world} process(es), "
            f"{r.coconut.model.num_params() / 1e6:.2f}M parameters, {r.tok.kind} vocabulary of {r.tok.vocab_size} "
            f"rows, {len(r.train_tok)} {'fresh ' if r.train_records is None else ''}train samples per epoch / "
            f"{len(r.valid_tok)} valid samples")
    return r


def optimizer_for_stage(optimizer, stage, r, args):
    """The optimizer for an epoch of `stage`: the one in use while the stage goes on, a fresh AdamW (no moment
    estimates) when the stage changes (§3: the optimizer state is reset at each stage switch). A run resumed
    mid-stage continues with the saved state (r.optimizer_state, of stage r.optimizer_stage); r.optimizer_stage
    records the stage of the optimizer returned."""
    # --- exercise 6: the optimizer reset ---
    if optimizer is None or stage != r.optimizer_stage:
        optimizer = torch.optim.AdamW(r.coconut.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        if r.optimizer_state is not None and stage == r.optimizer_stage:
            optimizer.load_state_dict(r.optimizer_state)
        r.optimizer_state, r.optimizer_stage = None, stage
    return optimizer
    # --- end of exercise 6 ---


def train_epoch(r, model, optimizer, epoch, args, ddp, world, rank, device):
    """One pass over the epoch's training examples at its stage; returns the mean training loss."""
    from tqdm import tqdm
    stage = r.stages[epoch]
    # Everything random in an epoch derives from (seed, epoch): resuming needs no saved RNG state.
    rng = random.Random(args.seed * 100003 + epoch)
    examples = build_examples(r.train_tok, stage, args, r.tok, rng)
    batches = data.example_batches(examples, args.batch_size, args.bucket, rng, r.tok.special.latent)
    # the schedule restarts with each stage's optimizer; its step count follows from the epoch
    steps_in_stage = r.stages.count(stage) * len(batches)
    step = (epoch - r.stages.index(stage)) * len(batches)
    r.coconut.train()
    bar = tqdm(micro_batches(batches, examples, args, world, rank, r.tok), total=len(batches), disable=rank != 0,
               desc=f"epoch {epoch + 1}/{args.num_epochs} stage {stage}", leave=False)
    t0, tokens, loss_sum = time.time(), 0, 0.0
    for micro in bar:
        lr = learning_rate(step, steps_in_stage, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for k, batch in enumerate(micro):
            batch = {key: v.to(device) for key, v in batch.items()}
            sync = k == len(micro) - 1
            ctx = model.no_sync() if ddp and not sync else torch.enable_grad()
            with ctx, autocast(device, args.bf16):
                out = model(**batch, return_logits=False)
                (out.loss / len(micro)).backward()  # each micro-batch's mean, averaged (the reference's way)
            loss_sum += float(out.loss.detach()) / len(micro)
            tokens += int(batch["attention_mask"].sum())
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(r.coconut.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        fault_point("mid-epoch", epoch)
        bar.set_postfix(loss=f"{float(out.loss.detach()):.3f}", lr=f"{lr:.2e}",
                        tok_s=f"{tokens * world / max(time.time() - t0, 1e-9):.0f}")
    return loss_sum / len(batches)


def save_epoch(r, optimizer, epoch, m, args, log):
    """Log the epoch, write best.pt (the best validation accuracy at the final stage) and last.pt, then
    metrics.jsonl from the history last.pt carries. Rank 0 only."""
    stage, final_stage = r.stages[epoch], r.stages[-1]
    log(f"epoch {epoch + 1:3d} | stage {stage} | train loss {m['train_loss']:.4f} | val loss {m['val_loss']:.4f} | "
        f"val acc {split_text(m, 'val_acc', 'val_n')} | new tokens {m['val_new_tokens']:.1f} | questions seen "
        f"{m['questions_seen']:,} ({m['distinct_questions']:,} distinct) | {m['seconds']:.0f}s")
    best = stage == final_stage and m["val_acc"] > r.best_acc  # best among epochs evaluated as at the end
    state = checkpoint_state(r.coconut, r.tok, args, epoch, stage, optimizer, r.history,
                             m["val_acc"] if best else r.best_acc)
    if best:
        save_checkpoint(state, r.best_path)
        fault_point("after-best", epoch)
    save_checkpoint(state, r.last_path)
    r.saved_epoch = epoch
    fault_point("after-checkpoint", epoch)
    write_metrics(r.history, r.metrics_path)


def main(argv=None):
    t_start = time.time()
    args = get_args(argv)
    ddp, rank, world, device = start_processes(args)
    log = print if rank == 0 else (lambda *a, **k: None)
    notes = resolve(args, device)
    check_args(args, world)
    for note in notes:  # once every flag has passed
        log(note)
    r = setup(args, device, world, rank, log)
    model = torch.nn.parallel.DistributedDataParallel(r.coconut) if ddp else r.coconut
    optimizer, epoch = None, r.start_epoch
    try:
        for epoch in range(r.start_epoch, args.num_epochs):
            stage = r.stages[epoch]
            optimizer = optimizer_for_stage(optimizer, stage, r, args)  # a fresh AdamW at each new stage (§3)
            t0 = time.time()
            if r.train_records is None and epoch > r.start_epoch:
                r.train_tok = stream_samples(args, epoch, r.tok, r.seen)
            data_seconds = time.time() - t0
            train_loss = train_epoch(r, model, optimizer, epoch, args, ddp, world, rank, device)
            trained = epoch + 1 - args.start_epoch  # epochs this run (and the runs it resumes) trained
            m = {"epoch": epoch + 1, "stage": stage, "train_loss": train_loss,
                 **evaluate(r.coconut, r.tok, r.valid_records, r.valid_tok, stage, args, device, world, rank),
                 "questions_seen": trained * len(r.train_tok),
                 "distinct_questions": (trained if r.train_records is None else 1) * len(r.train_tok),
                 "seconds": time.time() - t0, "data_seconds": data_seconds, "wall": time.time() - t_start}
            r.history.append(m)
            if rank == 0:
                save_epoch(r, optimizer, epoch, m, args, log)
            if stage == r.stages[-1]:
                r.best_acc = max(r.best_acc, m["val_acc"])
            if args.stop_after_epoch is not None and epoch + 1 >= args.stop_after_epoch:
                break
    except KeyboardInterrupt:
        if rank == 0:
            interrupted(epoch, r.saved_epoch, r.last_path)
        raise SystemExit(130)
    if ddp:
        dist.barrier()  # rank 0 may still be saving; tearing gloo down under it aborts the other rank
        dist.destroy_process_group()
    return r.best_acc


if __name__ == "__main__":
    try:
        main()
    except data.DataError as e:
        fail(str(e))
    except KeyboardInterrupt:  # before the first epoch (main reports one inside the loop itself)
        print("interrupted before training began: nothing was saved", file=sys.stderr)
        sys.exit(130)

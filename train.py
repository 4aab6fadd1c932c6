"""Training: the multi-stage curriculum of Coconut and every baseline of the paper's Table 1 (paper §3-4).

Stage k replaces the first k reasoning steps by k*c continuous thoughts; the optimizer is rebuilt whenever
the stage changes (§3 "Training Procedure"). Every default is in run.py's recipes; `--help` shows this machine's.

    python train.py --dataset prosqa --c 1                      # the front door (a laptop recipe on a CPU)
    python train.py --dataset prosqa --model gpt2               # the paper's setup, on a GPU
    torchrun --nproc_per_node 4 train.py --dataset prosqa --model gpt2
    python train.py --dataset prosqa --method cot               # any row of Table 1: see --method
"""

import argparse
import math
import os
import random
import shlex
import sys
import time

import torch
import torch.distributed as dist

import data
import tasks
import weights
from coconut import frontier_loss
from data import (ArgumentParser, fail, flag_type, need, nonnegative_float, nonnegative_int, one_of, positive_float,
                  positive_int, switch)
from run import (DEFAULTS, SHIPPED_COT, TINY, autocast, build_examples, check_lengths, checkpoint_state, evaluate,
                 fault_point, first_samples, inherit, load_checkpoint, load_splits, model_for, pick_device, recipe,
                 recipe_argv, recipe_names, run_files, save_checkpoint, seen_tensor, split_text, start_processes,
                 start_run_folder, stream_samples, vocabulary, write_metrics)


def get_args(argv=None):
    device = pick_device(None)
    here = recipe(DEFAULTS["dataset"], laptop=device == "cpu", device=device)  # `python train.py` on this machine

    def h(name, text=""):  # a flag's help, with the value it takes here when not given
        value = here.get(name)
        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        return f"{text}{' ' if text else ''}[here: {shown}]" if name in here else text
    probability = flag_type(float, lambda v: 0 <= v <= 1, "a probability, from 0 to 1")
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=one_of(tasks.DATASETS), default=DEFAULTS["dataset"], help=h("dataset"))
    p.add_argument("--method", type=one_of(tuple(data.METHODS)), default=DEFAULTS["method"],
                   help=h("method", " | ".join(data.METHODS)))
    p.add_argument("--c", type=positive_int, help=h("c", "continuous thoughts per reasoning step"))
    p.add_argument("--max_latent_stage", type=nonnegative_int, help=h("max_latent_stage"))
    p.add_argument("--epochs_per_stage", type=flag_type(int, lambda e: e >= 1, "each stage lasts at least 1 epoch"),
                   nargs="+", help=h("epochs_per_stage", "epochs of each stage; the last value holds for the later "
                                     "stages (e.g. 3 1: stage 0 three epochs, every later stage one)"))
    p.add_argument("--num_epochs", type=positive_int, help=h("num_epochs"))
    p.add_argument("--pad_latent_to_max", type=switch, help=h("pad_latent_to_max", "past the last stage keep "
                                                              "max_stage*c thoughts"))
    p.add_argument("--uniform_prob", type=probability, help=h("uniform_prob", "probability of a random stage per "
                                                              "sample (0.3: the §5 analysis model)"))
    p.add_argument("--icot_tokens_per_stage", type=positive_int, help=h("icot_tokens_per_stage", "--method icot: "
                                                                         "tokens removed per epoch"))
    p.add_argument("--frontier_loss", type=nonnegative_float, help=h("frontier_loss", "beyond the paper: the weight "
                   "of a loss scoring each thought on the names within its hops of the entity (ProsQA; 0: off)"))
    p.add_argument("--lr", type=positive_float, help=h("lr"))
    p.add_argument("--lr_schedule", choices=("constant", "cosine"), help=h("lr_schedule", "constant (the paper's), "
                   "or per stage: linear warmup, then cosine decay to --min_lr"))
    p.add_argument("--warmup_steps", type=nonnegative_int, help=h("warmup_steps", "--lr_schedule cosine: warmup "
                                                                  "after each reset"))
    p.add_argument("--min_lr", type=nonnegative_float, help=h("min_lr", "--lr_schedule cosine: the rate at each "
                                                              "stage's end"))
    p.add_argument("--reset_optimizer", choices=("stage", "epoch"), help=h("reset_optimizer", "a fresh AdamW at "
                   "each stage change (the paper's text) or every epoch (the reference's code)"))
    p.add_argument("--start_latent", choices=("opener", "checkpoint"), help=h("start_latent", "a run that puts "
                   "thoughts after a checkpoint that never read them (a CoT): <|start-latent|>'s row, whose last "
                   "hidden state is the first thought, starts as a copy of the token opening the steps of most "
                   "questions ('Every' on ProsQA, '<<' on GSM8k; none on ProntoQA), or stays the checkpoint's"))
    p.add_argument("--weight_decay", type=nonnegative_float, help=h("weight_decay"))
    p.add_argument("--grad_clip", type=flag_type(float, lambda v: v >= 0, "must be 0 (off) or more"),
                   help=h("grad_clip", "clip the gradient norm (0: off, as the paper's)"))
    p.add_argument("--batch_size", type=positive_int, help=h("batch_size", "effective batch"))
    p.add_argument("--micro_batch", type=positive_int, help=h("micro_batch", "per device per step; the rest is "
                                                              "accumulation"))
    p.add_argument("--bucket", type=switch, help=h("bucket", "batch samples of similar length (less padding)"))
    p.add_argument("--model", default=DEFAULTS["model"], help=h("model", "auto | tiny | gpt2 | gpt2-medium | ... "
                   "| a Hugging Face folder (auto: tiny without a GPU, else gpt2)"))
    p.add_argument("--vocab", default=DEFAULTS["vocab"], choices=("auto",) + data.VOCABS, help=h("vocab", "auto: "
                   "--init_from's; else, for a model from scratch, parent-child on ProsQA (the layout in which a "
                   "small model learns to search) and words on ProntoQA; else gpt2 (see data.Tokenizer)"))
    p.add_argument("--n_layer", type=positive_int, help=h("n_layer", "--model tiny: layers (--init_from: its)"))
    p.add_argument("--n_embd", type=positive_int, help=h("n_embd", "--model tiny: width (--init_from: its)"))
    p.add_argument("--n_head", type=positive_int, help=h("n_head", "--model tiny: attention heads (--init_from: "
                                                         "its)"))
    p.add_argument("--init_std", type=positive_float, help=h("init_std", "--model tiny: std of the initial weights "
                                                             "(GPT-2's 0.02 is tuned for width 768)"))
    p.add_argument("--init_from", help="a checkpoint (.pt or run folder) to start from, e.g. CoT; its shape and "
                   "vocabulary are the run's; scratch: a new model [here: models/prosqa-mini-cot on generated ProsQA "
                   "with the tiny model, scratch otherwise]")
    p.add_argument("--start_epoch", type=int, help="first epoch to train; with --init_from the length of stage 0, "
                   f"which it already is [here: {here['epochs_per_stage'][0] if device == 'cpu' else 0}]")
    p.add_argument("--bf16", type=switch, help=h("bf16", "bf16 autocast on CUDA (0: fp32, as the reference's configs)"))
    p.add_argument("--compile", type=switch, help=h("compile", "torch.compile the GPT (nanoGPT's switch; bench.py "
                                                    "--compile measures what it buys)"))
    p.add_argument("--device", help=f"cuda | mps | cpu [here: {device}]")
    p.add_argument("--data_dir", help="where <dataset>_{train,valid,test}.json live [here: generated ProsQA-mini]"
                   if device == "cpu" else "where <dataset>_{train,valid,test}.json live [here: data]")
    p.add_argument("--train_size", type=positive_int, help=h("train_size", "use the first N training records "
                                                             "(--stream 1: fresh questions per epoch)"))
    p.add_argument("--stream", type=switch, help=h("stream", "generated ProsQA: 1 draws --train_size fresh "
                   "questions every epoch, none ever repeated; 0 repeats one fixed set of that size. ProntoQA with "
                   "--model tiny: 1 draws them from its generator too"))
    p.add_argument("--val_size", type=positive_int, help=h("val_size", "use the first N validation records"))
    p.add_argument("--nodes", type=int, nargs=2, help=h("nodes", "generated ProsQA graph sizes (min max)"))
    p.add_argument("--path", type=int, nargs=2, help=h("path", "generated ProsQA path lengths, ProntoQA hops "
                                                       "(min max)"))
    p.add_argument("--max_new_tokens", type=positive_int, help=h("max_new_tokens"))
    p.add_argument("--out_dir", help="default out/<recipe>, else out/<dataset>-<method>-c<c>")
    p.add_argument("--resume", action="store_true", help="continue from out_dir/last.pt")
    p.add_argument("--seed", type=int, help=h("seed"))
    p.add_argument("--stop_after_epoch", type=positive_int, help="stop after this epoch; the schedule stays "
                   "--num_epochs long (models/prosqa-mini-cot is epoch 19 of 60)")
    p.add_argument("--recipe", help="the flags of recipes/RECIPE.txt (each shipped model's), before the command "
                   f"line's, which win: {', '.join(recipe_names())}")
    return p.parse_args(recipe_argv(sys.argv[1:] if argv is None else argv))


def resolve(args, device):
    """Fill unset flags: from --init_from's checkpoint (its shape and vocabulary; by default on the laptop, the
    shipped CoT), then from the run's recipe (run.recipe: the paper's, or the laptop's for the tiny model on
    generated ProsQA). Returns the notes to show once every flag is checked, and the checkpoint (or None)."""
    notes, default_init = [], args.init_from is None and args.dataset == "prosqa" and args.data_dir is None and (
        args.model == "tiny" or (args.model == "auto" and device == "cpu"))
    if default_init:  # the laptop starts where the paper's GSM8k recipe does: from a CoT (stage 0 learned)
        args.init_from = os.path.relpath(SHIPPED_COT)
    args.init_from = None if args.init_from == "scratch" else args.init_from
    init = load_checkpoint(args.init_from) if args.init_from else None
    if init:
        notes.append(inherit(args, init) + ("; --init_from scratch starts from a new model" if default_init else ""))
    elif args.model == "auto" and device == "cpu":
        args.model = "tiny"
        notes.append("model: tiny (a GPT-2-shaped model from scratch), since no GPU is present; the paper's "
                     "setup is --model gpt2 on a GPU")
    elif args.model == "auto":
        try:
            weights.download_gpt2("gpt2")
            args.model = "gpt2"
        except ConnectionError as e:
            args.model = "tiny"
            notes.append(f"model: tiny, since GPT-2's weights could not be fetched ({e}); --model gpt2 needs them")
    if args.model not in ("tiny", *weights.HF_REPOS) and not os.path.isdir(args.model):
        fail(f"--model {args.model!r}: expected auto, tiny, {', '.join(weights.HF_REPOS)} or a Hugging Face folder")
    laptop = args.model == "tiny" and args.dataset == "prosqa" and args.data_dir is None
    for k, v in recipe(args.dataset, laptop, device, fork=init is not None).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.vocab == "auto":
        args.vocab = "gpt2" if args.model != "tiny" else "parent-child" if args.dataset == "prosqa" else "words"
    args.generated_data = laptop or (args.model == "tiny" and args.dataset == "prontoqa" and args.data_dir is None
                                     and args.stream == 1)
    if args.generated_data:
        notes.append(generated_data(args, laptop))
    if args.start_epoch is None:
        args.start_epoch = args.epochs_per_stage[0] if args.init_from else 0
    args.data_dir = args.data_dir or "data"
    args.out_dir = args.out_dir or os.path.join("out", args.recipe or f"{args.dataset}-{args.method}-c{args.c}")
    return notes, init


def generated_data(args, laptop):
    """Where a run on generated questions keeps its held-out questions (data/<name>-s<seed>); the note saying so."""
    if not laptop:  # --stream 1 on ProntoQA: its generator's questions, fresh every epoch
        hops = args.path = tuple(args.path or (5, 5))  # the official 5; fewer teach the lookup on shorter chains
        name = "" if hops == (5, 5) else f"-p{hops[0]}-{hops[1]}"
        args.train_size = args.train_size or tasks.PRONTOQA_SIZES["train"]
        args.data_dir = f"data/prontoqa{name}-s{args.seed}"
        return (f"data: ProntoQA ({'-'.join(map(str, sorted(set(hops))))} hops) from tasks.py's generator: "
                f"{args.train_size} fresh questions every epoch (none ever repeated); validation and test "
                f"questions held out in {args.data_dir}")
    args.data_dir = f"data/prosqa-mini-n{args.nodes[0]}-{args.nodes[1]}-p{args.path[0]}-{args.path[1]}-s{args.seed}"
    training = (f"{args.train_size} fresh questions every epoch (none ever repeated)" if args.stream else
                f"one fixed set of {args.train_size} questions, repeated every epoch (--stream 0)")
    return (f"data: ProsQA-mini ({args.nodes[0]}-{args.nodes[1]} nodes, paths of {args.path[0]}-{args.path[1]} "
            f"steps) from tasks.py's generator: {training}; validation and test questions held out in "
            f"{args.data_dir}. A laptop recipe; the paper's ProsQA is --model gpt2 --data_dir data")


def check_args(args, world):
    """The rules between flags (argparse has checked each flag alone), before any work: one line each."""
    need(args.min_lr <= args.lr, "--min_lr", args.min_lr, f"must be from 0 to --lr ({args.lr})")
    need(args.n_embd % args.n_head == 0, "--n_head", args.n_head, f"must divide --n_embd {args.n_embd}")
    need(args.batch_size % (args.micro_batch * world) == 0, "--batch_size", args.batch_size,
         f"is not a multiple of --micro_batch {args.micro_batch}" + (f" x {world} processes" if world > 1 else ""))
    need(0 <= args.start_epoch < args.num_epochs, "--start_epoch", args.start_epoch,
         f"must be from 0 to --num_epochs - 1 ({args.num_epochs - 1})")
    thoughts = args.max_latent_stage * args.c  # every GPT-2 release and the tiny model have a context of 1024
    need(thoughts < TINY["block_size"], "--max_latent_stage", args.max_latent_stage,
         f"{thoughts} thoughts (x --c {args.c}) do not fit a context of {TINY['block_size']}")
    feedback = [m for m, row in data.METHODS.items() if row.slots == "thoughts"]
    need(not args.frontier_loss or (args.method in feedback and args.dataset == "prosqa"), "--frontier_loss",
         args.frontier_loss, f"scores thoughts on a graph: only for --dataset prosqa and --method {' or '.join(feedback)}")
    need(args.vocab == "gpt2" or args.model == "tiny", "--vocab", args.vocab,
         f"a pretrained model ({args.model}) keeps GPT-2's vocabulary: --vocab gpt2")
    need(args.generated_data or not args.stream, "--stream", args.stream,
         "draws generated questions: only for --model tiny on prosqa or prontoqa, without --data_dir")
    if args.generated_data and args.dataset == "prosqa":
        try:
            tasks.check_generator_flags(args.nodes, args.path)
        except data.DataError as e:
            fail(str(e))
    need(not args.generated_data or args.dataset == "prosqa" or 1 <= args.path[0] <= args.path[1] <= 6, "--path",
         " ".join(map(str, args.path or ())), "ProntoQA's hops: from 1 to 6, MIN at most MAX (17 concept names)")
    need(not os.path.isfile(args.out_dir), "--out_dir", args.out_dir, "is a file, not a folder")
    last = os.path.join(args.out_dir, "last.pt")
    if not args.resume and os.path.exists(last):
        fail(f"{args.out_dir} already holds a run ({last}); pass --resume to continue it, or --out_dir for a new one")
    if args.resume and not os.path.exists(last):
        fail(f"--resume: {last} does not exist")


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
        return data.final_stage(args.max_latent_stage)
    end = 0
    for stage in range(data.final_stage(args.max_latent_stage)):
        end += args.epochs_per_stage[min(stage, len(args.epochs_per_stage) - 1)]
        if epoch < end:
            return stage
    return data.final_stage(args.max_latent_stage)
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


def interrupted(epoch, files, rank):
    """Ctrl-C: one line saying what is on disk and the command that continues (from rank 0), then exit status 130.
    The checkpoint is read back rather than remembered, and metrics.jsonl rewritten from it: a Ctrl-C may land
    between the two writes."""
    if rank:
        raise SystemExit(130)
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    command = shlex.join(["python", os.path.basename(sys.argv[0]) or "train.py", *argv])
    last_path, saved_epoch = files.last, None
    if os.path.exists(last_path):
        last = load_checkpoint(last_path)
        write_metrics(last["metrics"], files.metrics)
        saved_epoch = last["epoch"]
    if saved_epoch is None:
        print(f"interrupted in epoch {epoch + 1}, before its first checkpoint: nothing to resume; {command} starts "
              "again", file=sys.stderr)
    else:
        print(f"interrupted in epoch {epoch + 1}; {last_path} holds epoch {saved_epoch + 1}: {command} --resume "
              "continues", file=sys.stderr)
    raise SystemExit(130)


def micro_batches(batches, examples, args, world, rank, tok):
    """Split each global batch into micro-batches (each with its examples' indices); rank r takes its consecutive
    share.

    One process with accumulation A*W sees the same micro-batches as W processes with accumulation A, so
    their averaged gradients agree.
    """
    per_rank = args.batch_size // world
    for batch in batches:
        step = batch[rank * per_rank:(rank + 1) * per_rank]
        chunks = [step[k:k + args.micro_batch] for k in range(0, len(step), args.micro_batch)]
        yield [(data.collate([examples[j] for j in chunk], tok.eos_id, tok.special.latent), chunk)
               for chunk in chunks if chunk]


def resumed_checkpoint(args, files):
    """The run's own checkpoint (--resume), or None."""
    resumed = load_checkpoint(files.last) if args.resume else None
    if resumed and resumed["meta"]["method"] != args.method:
        fail(f"--resume: {files.last} was trained with --method {resumed['meta']['method']}, not {args.method}")
    if resumed and "metrics" not in resumed:
        fail(f"--resume: {files.last} predates the metrics history checkpoints carry; evaluate it, or start anew")
    return resumed


def optimizer_for_stage(optimizer, stage, optimizer_stage, coconut, args):
    """The optimizer for an epoch of `stage`, given the one in use (None before the first epoch) and the stage it
    was made for: the same one while the stage goes on (a run resumed mid-stage passes the one it loaded, with
    its moments), a fresh AdamW with no moment estimates when the stage changes (§3: the optimizer state is
    reset at each stage switch)."""
    # --- exercise 6: the optimizer reset ---
    if optimizer is None or stage != optimizer_stage:
        return torch.optim.AdamW(coconut.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return optimizer
    # --- end of exercise 6 ---


def resumed_optimizer(resumed, coconut, args):
    """(optimizer, the stage it was made for): a resumed run's, with its saved moments (optimizer_for_stage keeps
    it while that stage goes on), or (None, None)."""
    if not resumed:
        return None, None
    optimizer = optimizer_for_stage(None, resumed["stage"], None, coconut, args)
    optimizer.load_state_dict(resumed["optimizer"])
    return optimizer, resumed["stage"]


def train_epoch(model, optimizer, samples, tok, stages, epoch, args, ddp, world, rank, device):
    """One pass over the epoch's training samples at its stage; returns the mean training loss. `model` is the
    Coconut (or its DDP wrapper) whose parameters `optimizer` steps."""
    from tqdm import tqdm
    stage = stages[epoch]
    # Everything random in an epoch derives from (seed, epoch): resuming needs no saved RNG state.
    rng = random.Random(args.seed * 100003 + epoch)
    examples = build_examples(samples, stage, args, tok, rng)
    batches = data.example_batches(examples, args.batch_size, args.bucket, rng, tok.special.latent)
    # the schedule restarts with each optimizer (a stage's, or an epoch's); its step count follows from the epoch
    first, span = (epoch, 1) if args.reset_optimizer == "epoch" else (stages.index(stage), stages.count(stage))
    steps_in_stage, step = span * len(batches), (epoch - first) * len(batches)
    model.train()
    bar = tqdm(micro_batches(batches, examples, args, world, rank, tok), total=len(batches), disable=rank != 0,
               desc=f"epoch {epoch + 1}/{args.num_epochs} {stage_text(stage, args)}", leave=False)
    t0, tokens, loss_sum, frontier_sum = time.time(), 0, 0.0, 0.0
    for micro in bar:
        lr = learning_rate(step, steps_in_stage, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for k, (batch, rows) in enumerate(micro):
            batch = {key: v.to(device) for key, v in batch.items()}
            sync = k == len(micro) - 1
            ctx = model.no_sync() if ddp and not sync else torch.enable_grad()
            with ctx, autocast(device, args.bf16):
                out = model(**batch, return_logits=False)
                loss = out.loss
                if args.frontier_loss:
                    frontier = frontier_loss((model.module if ddp else model).model.lm_head, out.inputs_embeds,
                                             batch["input_ids"], tok.special.latent, [samples[j]["hops"] for j in rows],
                                             args.c)
                    loss = loss + args.frontier_loss * frontier
                    frontier_sum += float(frontier.detach()) / len(micro)
                (loss / len(micro)).backward()  # each micro-batch's mean, averaged (the reference's way)
            loss_sum += float(out.loss.detach()) / len(micro)
            tokens += int(batch["attention_mask"].sum())
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        fault_point("mid-epoch", epoch)
        bar.set_postfix(loss=f"{float(out.loss.detach()):.3f}", lr=f"{lr:.2e}",
                        tok_s=f"{tokens * world / max(time.time() - t0, 1e-9):.0f}")
    losses = {"train_loss": loss_sum / len(batches)}
    if args.frontier_loss:  # logged apart: train_loss stays the language loss, comparable across runs
        losses["train_frontier_loss"] = frontier_sum / len(batches)
    return losses


def stage_text(stage, args):
    """'stage 2 (2 thoughts)': what a newcomer watches in the progress bar and the epoch lines."""
    thoughts = data.layout(args.max_latent_stage, stage, data.curriculum_of(vars(args)))[1]
    return f"stage {stage}" + (f" ({thoughts} thought{'s' if thoughts > 1 else ''})" if thoughts else "")


def best_accuracy(history, final_stage):
    """The best validation accuracy among the epochs at the final stage (-1.0 before the first)."""
    return max((m["val_acc"] for m in history if m["stage"] == final_stage), default=-1.0)


def save_epoch(coconut, tok, optimizer, history, stages, epoch, seen, files, args, log):
    """Log the epoch, write best.pt (the best validation accuracy at the final stage) and last.pt, then
    metrics.jsonl from the history last.pt carries. last.pt also keeps the stream's question keys (`seen`), so
    that --resume need not regenerate them. Rank 0 only."""
    m, stage = history[-1], stages[epoch]
    frontier = f" (frontier {m['train_frontier_loss']:.4f})" if "train_frontier_loss" in m else ""
    log(f"epoch {epoch + 1:3d} | {stage_text(stage, args)} | train loss {m['train_loss']:.4f}{frontier} | "
        f"val loss {m['val_loss']:.4f} | val acc {split_text(m, 'val_acc', 'val_n')} | "
        f"new tokens {m['val_new_tokens']:.1f} | questions seen "
        f"{m['questions_seen']:,} ({m['distinct_questions']:,} distinct) | {m['seconds']:.0f}s")
    best = stage == stages[-1] and m["val_acc"] > best_accuracy(history[:-1], stages[-1])  # evaluated as at the end
    state = checkpoint_state(coconut, tok, args, epoch, stage, optimizer, history, best_accuracy(history, stages[-1]))
    if best:
        save_checkpoint(state, files.best)
        fault_point("after-best", epoch)
    if seen is not None:
        state["seen"] = seen_tensor(seen)
    save_checkpoint(state, files.last)
    fault_point("after-checkpoint", epoch)
    write_metrics(history, files.metrics)


def describe(args, device, world, coconut, tok, train_tok, seen, valid_tok):
    """The run's first lines after the notes: every flag, then the machine, the model and the data."""
    return "\n".join(["config: " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
            f"device {device}{' bf16' if device.startswith('cuda') and args.bf16 else ''}, {world} process(es), "
            f"{coconut.model.num_params() / 1e6:.2f}M parameters, {tok.kind} vocabulary of {tok.vocab_size} rows, "
            f"{len(train_tok)} {'fresh ' if seen is not None else ''}train samples per epoch / {len(valid_tok)} "
            "valid samples"])


def main(argv=None):
    t_start = time.time()
    args = get_args(argv)
    ddp, rank, world, device = start_processes(args)
    log = print if rank == 0 else (lambda *a, **k: None)
    notes, init = resolve(args, device)
    check_args(args, world)
    for note in notes:  # once every flag has passed
        log(note)
    files = run_files(args.out_dir)
    resumed = resumed_checkpoint(args, files)
    splits = load_splits(args, log)
    tok = vocabulary(args, splits.texts, resumed or init, log)
    valid_tok = [data.tokenize_record(tok, r) for r in splits.valid]
    start_epoch = resumed["epoch"] + 1 if resumed else args.start_epoch
    train_tok, seen = first_samples(args, splits, tok, start_epoch, resumed)
    coconut = model_for(args, tok, device, init, resumed, train_tok, log)
    stages = [stage_for_epoch(e, args) for e in range(args.num_epochs)]
    check_lengths([(splits.sources["train"], train_tok), (splits.sources["valid"], valid_tok)], stages, args, tok,
                  coconut.model.config.block_size)
    history = list(resumed["metrics"]) if resumed else []
    if rank == 0:
        start_run_folder(args, files, history)
        log(describe(args, device, world, coconut, tok, train_tok, seen, valid_tok))
    model = torch.nn.parallel.DistributedDataParallel(coconut) if ddp else coconut
    optimizer, optimizer_stage = resumed_optimizer(resumed, coconut, args)
    try:
        for epoch in range(start_epoch, min(args.num_epochs, args.stop_after_epoch or args.num_epochs)):
            stage = stages[epoch]
            if args.reset_optimizer == "epoch":  # the reference's run.py: a fresh AdamW every epoch
                optimizer = None
            optimizer = optimizer_for_stage(optimizer, stage, optimizer_stage, coconut, args)  # fresh at a new stage
            optimizer_stage, t0 = stage, time.time()
            if seen is not None and epoch > start_epoch:
                train_tok = stream_samples(args, epoch, tok, seen)
            data_seconds = time.time() - t0
            train_losses = train_epoch(model, optimizer, train_tok, tok, stages, epoch, args, ddp, world, rank, device)
            trained = epoch + 1 - args.start_epoch  # epochs this run (and the runs it resumes) trained
            history.append({"epoch": epoch + 1, "stage": stage, **train_losses,
                            **evaluate(coconut, tok, splits.valid, valid_tok, stage, args, device, world, rank),
                            "questions_seen": trained * len(train_tok),
                            "distinct_questions": (trained if seen is not None else 1) * len(train_tok),
                            "seconds": time.time() - t0, "data_seconds": data_seconds, "wall": time.time() - t_start})
            if rank == 0:
                save_epoch(coconut, tok, optimizer, history, stages, epoch, seen, files, args, log)
    except KeyboardInterrupt:
        interrupted(epoch, files, rank)
    finish(args, files, ddp, log)
    return best_accuracy(history, stages[-1])


def finish(args, files, ddp, log):
    """Tear DDP down, then say where the model is and how to evaluate it."""
    if ddp:
        dist.barrier()  # rank 0 may still be saving; tearing gloo down under it aborts the other rank
        dist.destroy_process_group()
    best = files.best if os.path.exists(files.best) else files.last
    log(f"done: the model is {best}; evaluate it on the test questions and draw its thoughts (Figure 7) with\n"
        f"  python eval.py --ckpt {args.out_dir} --split test --probe 3 --plot figs")


if __name__ == "__main__":
    try:
        data.run_command(main)
    except KeyboardInterrupt:  # before the first epoch (main reports one inside the loop itself)
        print("interrupted before training began: nothing was saved", file=sys.stderr)
        sys.exit(130)

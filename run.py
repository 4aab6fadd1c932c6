"""What a run's scripts share: every default (the recipes, and each shipped model's in recipes/), the device,
the checkpoint and the run folder, and evaluation's greedy generation, answer check and validation (paper §4:
greedy decoding, accuracy as the reference computes it).

train.py, eval.py and bench.py import this module and never each other. A checkpoint is a dict of tensors,
numbers, strings, lists and dicts: written atomically and durably (data.write_atomic), read with
torch.load(weights_only=True), and rebuilt into exactly the model and vocabulary it was trained with.
"""

import argparse
import json
import os
import pickle
import shlex
import signal
import zipfile
from collections import namedtuple

import torch
import torch.distributed as dist

import data
import tasks
import weights
from coconut import Coconut
from data import fail, need
from model import GPT, GPTConfig

CHECKPOINT_KEYS = ("model", "model_config", "vocab", "meta", "args")


# ----------------------------------------------------------------------------------------------------------
# Every default, in one place. A flag left unset takes the run's recipe: the paper's, or the laptop's where the
# run is a small model from scratch on generated ProsQA (--model tiny without --data_dir: the default on a
# machine without a GPU). Flags given explicitly win. `python train.py --help` shows what each flag takes here.

TINY = dict(n_layer=4, n_head=8, n_embd=128, block_size=1024)  # --model tiny: GPT-2's shape, narrow and shallow
DEFAULTS = dict(  # every run
    dataset="prosqa", method="coconut", model="auto", vocab="auto", pad_latent_to_max=1, reset_optimizer="stage",
    start_latent="opener",
    icot_tokens_per_stage=8, min_lr=0.0, weight_decay=0.01, bucket=1, bf16=1, compile=0, seed=0,
    n_layer=TINY["n_layer"], n_head=TINY["n_head"], n_embd=TINY["n_embd"],
    frontier_loss=0.0)  # beyond the paper, off
# The paper's recipe (§4: GPT-2 124M, AdamW lr 1e-4, weight decay 0.01, effective batch 128, constant lr),
# then what differs per dataset (the reference's configs). micro_batch only splits the batch: 8 on a CPU.
PAPER = dict(lr=1e-4, lr_schedule="constant", warmup_steps=0, grad_clip=0.0, init_std=0.02, uniform_prob=0.0,
             batch_size=128, micro_batch=32, stream=0)
PAPER_DATASETS = {
    "prosqa": dict(c=1, max_latent_stage=6, epochs_per_stage=[5], num_epochs=50, max_new_tokens=128),
    "prontoqa": dict(c=1, max_latent_stage=6, epochs_per_stage=[5], num_epochs=50, max_new_tokens=128),
    "gsm8k": dict(c=2, max_latent_stage=3, epochs_per_stage=[3], num_epochs=25, max_new_tokens=64),
}
# The laptop: a small model from scratch on ProsQA-mini (smaller graphs from our generator), fresh questions
# every epoch, so that the whole curriculum fits in 20 minutes on 2 cores. Why each value: docs/lab.md. A stage for
# every step of the longest path (3), as the paper's 6 stages cover ProsQA's 6: with 2, the 3-step questions were
# left two thoughts for three hops and answered at chance.
LAPTOP = dict(nodes=(6, 9), path=(2, 3), train_size=16000, val_size=200, stream=1, c=1, max_latent_stage=3,
              epochs_per_stage=[3, 1], num_epochs=8, batch_size=8, micro_batch=8, lr=1.5e-3,
              lr_schedule="cosine", warmup_steps=200, grad_clip=1.0, init_std=0.1, max_new_tokens=48)
# The laptop forks the shipped CoT (models/prosqa-mini-cot, stage 0 learned) unless --init_from scratch, with a
# tenth of the samples at a random stage (the reference's uniform_prob, as reasoning-by-superposition trains one
# thought a step): with the CoT's own <|start-latent|> row and no mixing, one thought a step lost the search at
# stage 2 on every seed; the step opener (--start_latent) is what keeps it (docs/results.md).
LAPTOP_FORK = dict(uniform_prob=0.1)
SHIPPED_COT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "prosqa-mini-cot")
LAPTOP_HELD_OUT = {"valid": 500, "test": 500}  # generated once; --val_size uses the first N validation records


def recipe(dataset, laptop, device, fork=True):
    """Every default of a run on `dataset`: DEFAULTS, the paper's recipe, and the laptop's over it (forking a
    CoT, or from scratch)."""
    out = {**DEFAULTS, **PAPER, **PAPER_DATASETS[dataset]}
    if device == "cpu":
        out["micro_batch"] = 8
    if laptop:
        out.update(LAPTOP, **(LAPTOP_FORK if fork else {}))
    return out


# Each shipped model's flags, in recipes/NAME.txt: `python train.py --recipe NAME` trains it again.
RECIPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")


def recipe_names():
    return sorted(f[:-4] for f in os.listdir(RECIPES) if f.endswith(".txt")) if os.path.isdir(RECIPES) else []


def recipe_argv(argv):
    """argv with --recipe NAME's flags (recipes/NAME.txt, # comments allowed) put before the others."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe")
    name = pre.parse_known_args(argv)[0].recipe
    if name is None:
        return argv
    need(name in recipe_names(), "--recipe", name, f"no recipes/{name}.txt; expected one of "
         f"{', '.join(recipe_names())}")
    with open(os.path.join(RECIPES, name + ".txt"), encoding="utf-8") as f:
        return shlex.split(f.read(), comments=True) + list(argv)


# ----------------------------------------------------------------------------------------------------------
# The device.

def pick_device(requested):
    if requested:
        if requested not in ("cpu", "mps") and not requested.startswith("cuda"):
            fail(f"--device {requested}: expected cpu, cuda, cuda:N or mps")
        if requested.startswith("cuda") and not torch.cuda.is_available():
            fail(f"--device {requested}: CUDA is not available")
        if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            fail("--device mps: MPS is not available")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def start_processes(args):
    """(ddp, rank, world, device): one process, or one of torchrun's (DDP)."""
    if "RANK" not in os.environ:
        return False, 0, 1, pick_device(args.device)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = f"cuda:{int(os.environ['LOCAL_RANK'])}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    return True, dist.get_rank(), dist.get_world_size(), device


def autocast(device, bf16=True):
    """bf16 autocast on CUDA (the default); a no-op on other devices or with --bf16 0."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda") and bool(bf16))


# ----------------------------------------------------------------------------------------------------------
# The checkpoint: what a run writes, and the model rebuilt from it.

def checkpoint_meta(args):
    return {"method": args.method, "dataset": args.dataset, "c": args.c, "max_latent_stage": args.max_latent_stage,
            "pad_latent_to_max": args.pad_latent_to_max}


def checkpoint_state(coconut, tok, args, epoch, stage, optimizer, metrics, best_acc):
    """What a checkpoint holds: the GPT's weights and config, the vocabulary's id map, the curriculum (meta)
    and every flag, where the run stands (epoch, stage, optimizer, best validation accuracy) and its metrics."""
    return {"model": coconut.model.state_dict(), "model_config": vars(coconut.model.config), "vocab": tok.state(),
            "meta": {**checkpoint_meta(args), "stage": stage}, "args": vars(args), "epoch": epoch, "stage": stage,
            "optimizer": optimizer.state_dict(), "metrics": metrics, "best_acc": best_acc}


def save_checkpoint(state, path):
    """Atomically and durably (data.write_atomic): a kill mid-save leaves the previous checkpoint intact."""
    data.write_atomic(path, lambda f: (torch.save(state, f), fault_point("mid-save", state["epoch"])))


def export_run(run, folder):
    """A run folder as a shipped model: its best checkpoint without the optimizer state (a few MB), its
    config.json and metrics.jsonl, so that eval.py --ckpt and --curves read it as they read the run. The run may
    have gone anywhere (--out_dir); a shipped model names no machine's path, so its out_dir becomes the one
    `train.py --recipe NAME` writes, out/NAME, NAME the export folder's."""
    ckpt = load_checkpoint(run)
    if os.path.exists(folder):
        fail(f"{folder}: already exists; a model is exported into a new folder")
    out_dir = "out/" + os.path.basename(os.path.normpath(folder))
    state = {k: v for k, v in ckpt.items() if k not in ("optimizer", "seen", "path")}
    save_checkpoint({**state, "args": {**state["args"], "out_dir": out_dir}}, os.path.join(folder, "best.pt"))
    run_dir = os.path.dirname(ckpt["path"])
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    data.write_json_atomic({**config, "out_dir": out_dir}, os.path.join(folder, "config.json"), indent=1)
    with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:
        blob = f.read()
    data.write_atomic(os.path.join(folder, "metrics.jsonl"), lambda f: f.write(blob))
    return os.path.join(folder, "best.pt")


def checkpoint_path(path):
    """A .pt file, or a run folder (its best.pt, else last.pt)."""
    if os.path.isdir(path):
        for name in ("best.pt", "last.pt"):
            if os.path.exists(os.path.join(path, name)):
                return os.path.join(path, name)
        fail(f"{path}: no best.pt or last.pt in this folder")
    if not os.path.exists(path):
        fail(f"{path}: no such checkpoint")
    return path


def load_checkpoint(path):
    """A checkpoint of train.py as a dict, read with weights_only=True: a file that would need to run code to
    load (any pickled object beyond tensors, numbers, strings, lists and dicts) is refused, never executed."""
    path = checkpoint_path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # a torch.save archive whose pickle names a forbidden global, or garbage
        if "Unsupported global" in str(e) or zipfile.is_zipfile(path):
            fail(f"{path}: refused: it holds pickled Python objects that could run code when loaded; our "
                 "checkpoints hold only tensors, numbers, strings, lists and dicts")
        fail(f"{path}: not a PyTorch checkpoint (not an archive written by torch.save)")
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        fail(f"{path}: truncated or corrupt, not a readable checkpoint ({str(e).splitlines()[0]})")
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        fail(f"{path}: not a checkpoint written by train.py (no {', '.join(repr(k) for k in missing)})")
    ckpt["path"] = path
    return ckpt


def model_from_checkpoint(ckpt, device):
    """Rebuild exactly the model and vocabulary a checkpoint was trained with -> (Coconut, Tokenizer)."""
    tok = data.Tokenizer.from_state(ckpt["vocab"])
    # "pos_init" (always "normal" in a shipped model) named a lever that did not pay: docs/lab.md, lever (f2)
    config = GPTConfig(**{k: v for k, v in ckpt["model_config"].items() if k != "pos_init"})
    if config.vocab_size != tok.vocab_size:
        fail(f"{ckpt['path']}: a model of {config.vocab_size} rows with a vocabulary of {tok.vocab_size}")
    coconut = coconut_for(GPT(config), tok, ckpt["meta"]["method"])
    load_weights(coconut, ckpt)
    return coconut.to(device), tok


def load_weights(coconut, ckpt):
    """Copy a checkpoint's GPT weights into `coconut`."""
    try:
        coconut.model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as e:
        fail(f"{ckpt['path']}: its weights do not fit the model it describes ({str(e).splitlines()[0]})")


def build_model(args, tok, device):
    """A new run's model: GPT-2 (released or from scratch) with the three Coconut rows, in the thought loop."""
    if args.model == "tiny":
        torch.manual_seed(args.seed)
        gpt = GPT(GPTConfig(vocab_size=tok.vocab_size - 3, block_size=TINY["block_size"], n_layer=args.n_layer,
                            n_head=args.n_head, n_embd=args.n_embd, init_std=args.init_std))
    else:
        try:
            gpt = weights.from_pretrained(args.model)
        except ConnectionError as e:
            fail(f"--model {args.model}: could not get the weights ({e}); download them on a machine with network "
                 "into ~/.cache/coconut/<name>/ or pass a local Hugging Face folder")
        except (ValueError, FileNotFoundError, OSError) as e:
            fail(f"--model {args.model}: {e}")
        if gpt.config.vocab_size != tok.vocab_size - 3:
            fail(f"--model {args.model}: {gpt.config.vocab_size} rows, not GPT-2's {tok.vocab_size - 3}")
    gpt.add_token_rows(3, init_from=tok.init_row)  # <|start-latent|>, <|end-latent|>, <|latent|>
    return coconut_for(gpt, tok, args.method).to(device)


def vocabulary(args, texts, inherited, log=print):
    """The run's vocabulary: a checkpoint's own (its rows mean its pieces), or one built from the data. A
    checkpoint trained on other data gains a row for each word of this data it lacks (as GPT-2 gains Coconut's
    three): its blocks, with their lookups, carry over to a new task."""
    if not inherited:
        return data.Tokenizer.build(args.vocab, texts)
    tok = data.Tokenizer.from_state(inherited["vocab"])
    need(tok.kind == args.vocab, "--vocab", args.vocab, f"{inherited['path']} was trained with --vocab {tok.kind}")
    new = [] if tok.pieces is None else [p for p in data.Tokenizer.build(tok.kind, texts).pieces if p not in tok.row_of]
    if new:
        log(f"vocabulary: {len(new)} words {inherited['path']} never saw get new rows ({', '.join(new[:5])}, ...)")
    return data.Tokenizer(tok.kind, tok.pieces + new) if new else tok


def rows_moved(init, tok, new_rows):
    """init's model weights for a vocabulary that grew (`vocabulary`): each of its rows where `tok` puts the same
    piece or Coconut token, the others from `new_rows` (a new model's embedding); None where nothing grew."""
    old = data.Tokenizer.from_state(init["vocab"])
    if old.vocab_size == tok.vocab_size:
        return None
    state, grown = dict(init["model"]), new_rows.detach().cpu().clone()
    grown[[tok.row_of[p] for p in old.pieces] + list(tok.special)] = \
        state["transformer.wte.weight"][list(range(len(old.pieces))) + list(old.special)].to(grown.dtype)
    state["transformer.wte.weight"] = state["lm_head.weight"] = grown
    return dict(init, model=state)


def model_for(args, tok, device, init, resumed, samples, log):
    """The run's model: new, then --init_from's weights (a CoT's with <|start-latent|> as the step opener), then
    (--resume) the run's own."""
    coconut = build_model(args, tok, device)
    if init:
        load_weights(coconut, rows_moved(init, tok, coconut.model.transformer.wte.weight) or init)
        thoughts_begin = data.METHODS[args.method].markers and not data.METHODS[init["meta"]["method"]].markers
        if args.start_latent == "opener" and thoughts_begin and not resumed:
            start_as_step_opener(coconut, tok, samples, log)
    if resumed:
        load_weights(coconut, resumed)
    if args.compile:  # compiles the forward in place: parameters, state_dict and the thought loop are unchanged
        coconut.model.compile(dynamic=True)
    return coconut


def start_as_step_opener(coconut, tok, samples, log):
    """--start_latent opener: <|start-latent|>'s row becomes a copy of the token opening the steps of most
    questions (data.step_opener). The first thought is the last hidden state at that token, a row the CoT never
    read; as a copy of the step opener ("Every", after which the CoT writes the node the last step reached) the
    first thought starts on the frontier, and the search survives the second thought (docs/results.md)."""
    opener = data.step_opener(samples)
    if opener is None:
        log("<|start-latent|> keeps the checkpoint's row: no token opens the steps of most questions")
        return
    wte = coconut.model.transformer.wte.weight
    with torch.no_grad():
        wte[tok.special.start] = wte[opener]
    log(f"<|start-latent|> starts as a copy of {tok.decode([opener])!r}, the token opening most steps "
        "(--start_latent checkpoint keeps the checkpoint's row)")


def coconut_for(gpt, tok, method):
    """A GPT whose rows are `tok`'s, wrapped in the thought loop as `method` uses it (METHODS)."""
    s = tok.special
    return Coconut(gpt, s.latent, s.start, s.end, s.eos, pause_as_thought=data.METHODS[method].slots == "pauses")


# ----------------------------------------------------------------------------------------------------------
# The run folder: config.json, metrics.jsonl, last.pt and best.pt; what a run takes from --init_from's.

def inherit(args, init):
    """--init_from: the run's model, shape and vocabulary are the checkpoint's (a flag saying otherwise is an
    error). Returns the line that says what the run starts from."""
    config, vocab = init["model_config"], data.Tokenizer.from_state(init["vocab"]).kind
    theirs = {"model": init["args"].get("model", "tiny"), "vocab": vocab, "n_layer": config["n_layer"],
              "n_embd": config["n_embd"], "n_head": config["n_head"]}
    for flag, value in theirs.items():
        if getattr(args, flag) in (None, "auto"):
            setattr(args, flag, value)
        need(getattr(args, flag) == value, f"--{flag}", getattr(args, flag),
             f"--init_from {args.init_from} is {value}: its shape and vocabulary are the run's (--init_from "
             "scratch: a new model)")
    return (f"model: {init['path']}: a {config['n_layer']}-layer, {config['n_embd']}-wide {init['meta']['method']} "
            f"model ({vocab} vocabulary) after {init.get('epoch', -1) + 1} epochs; its weights start this run")


def seen_tensor(seen):
    """The stream's question keys (tasks.question_key: unsigned 64-bit) as int64 bits a checkpoint can hold."""
    return torch.tensor(sorted(k - (1 << 64) if k >> 63 else k for k in seen), dtype=torch.int64)


def seen_keys(tensor):
    return {k & ((1 << 64) - 1) for k in tensor.tolist()}


RunFiles = namedtuple("RunFiles", ["last", "best", "metrics"])


def run_files(out_dir):
    return RunFiles(*(os.path.join(out_dir, name) for name in ("last.pt", "best.pt", "metrics.jsonl")))


def write_metrics(history, path):
    """metrics.jsonl, one line per epoch, rewritten whole from the history the checkpoint carries."""
    data.write_atomic(path, lambda f: f.write("".join(json.dumps(m) + "\n" for m in history).encode("utf-8")))


def start_run_folder(args, files, history):
    """Rank 0, once every input has passed: clean what a killed save left (data.write_atomic's temporary files),
    write config.json, and metrics.jsonl from the checkpoint's history. The checkpoint is the commit point: it
    carries every epoch's metrics line, so after a kill at any moment the file holds each epoch once."""
    if os.path.isdir(args.out_dir):
        for name in os.listdir(args.out_dir):
            if name.endswith(".tmp"):
                os.remove(os.path.join(args.out_dir, name))
    data.write_json_atomic(vars(args), os.path.join(args.out_dir, "config.json"), indent=1)
    write_metrics(history, files.metrics)


# ----------------------------------------------------------------------------------------------------------
# A run's data: the splits, the stream of fresh generated questions, the check that every sequence fits.

def load_splits(args, log):
    """The run's training records (None when --stream 1 draws them per epoch), validation records, and the
    texts the vocabulary is built from. A compact vocabulary holds every word of the dataset's three split
    files (a name seen only in a question it is later asked gets an untrained row instead of failing), or, on
    generated data, every word the generator can write."""
    if args.generated_data:
        # fixed sizes for the held-out splits: the records (one random stream) must not depend on --val_size
        graph = args.dataset == "prosqa"
        paths = tasks.ensure_held_out(args.data_dir, args.dataset, args.seed, args.nodes, args.path, LAPTOP_HELD_OUT)
        held_out = {s: data.load_records(p, graph) for s, p in paths.items()}
        every_word = tasks.prosqa_vocabulary_texts() if graph else tasks.prontoqa_vocabulary_texts()
        texts = every_word + [t for rs in held_out.values() for r in rs for t in data.record_texts(r)]
        train = None if args.stream else epoch_records(args, 0, set())
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


def epoch_records(args, epoch, seen):
    """Generated data: epoch `epoch`'s training questions, none of `seen` (their keys join it)."""
    if args.dataset == "prontoqa":
        return tasks.prontoqa_epoch(args.seed, epoch, args.train_size, seen, tuple(args.path))
    return tasks.prosqa_epoch(args.seed, epoch, args.train_size, tuple(args.nodes), tuple(args.path), seen)


def stream_samples(args, epoch, tok, seen):
    """--stream 1: epoch `epoch`'s fresh training questions, tokenized (their keys join `seen`)."""
    return [data.tokenize_record(tok, r) for r in epoch_records(args, epoch, seen)]


Splits = namedtuple("Splits", ["train", "valid", "texts", "sources"])


def first_samples(args, splits, tok, start_epoch, resumed):
    """The tokenized training samples of the first epoch to train, and (--stream 1) the keys of every question
    of the epochs before it, so that no later epoch repeats one (None: a fixed set). A resumed run reads them
    from its checkpoint; one without them (older checkpoints) regenerates every earlier epoch, minutes at
    epoch 40."""
    if splits.train is not None:
        return [data.tokenize_record(tok, r) for r in splits.train], None
    if resumed and "seen" in resumed:
        seen = seen_keys(resumed["seen"])
    else:
        seen = set()
        for epoch in range(start_epoch):
            epoch_records(args, epoch, seen)
    return stream_samples(args, start_epoch, tok, seen), seen


# Tests only: COCONUT_TEST_KILL=POINT:EPOCH SIGKILLs the run at that point of that (0-based) epoch, so a kill
# at an awkward moment (mid-epoch, mid-save, between best.pt and last.pt, between last.pt and metrics.jsonl)
# is reproducible; POINT:EPOCH:INT sends Ctrl-C's SIGINT there instead.
TEST_KILL = os.environ.get("COCONUT_TEST_KILL")


def fault_point(point, epoch):
    if TEST_KILL in (f"{point}:{epoch}", f"{point}:{epoch}:INT"):
        os.kill(os.getpid(), signal.SIGINT if TEST_KILL.endswith(":INT") else signal.SIGKILL)


# ----------------------------------------------------------------------------------------------------------
# Evaluation's greedy generation and the answer check, shared with training's validation.

def batch_on(examples, tok, device):
    """A batch of examples (data.collate: first thoughts aligned) as tensors on `device`."""
    return {k: v.to(device) for k, v in data.collate(examples, tok.eos_id, tok.special.latent).items()}


def answer_of(text):
    """The reference's answer extraction: the text after the last '#', commas removed."""
    return text.split("#")[-1].replace(",", "").strip()


def is_correct(text, answer):
    """The reference's accuracy: the extracted answer equals the record's, commas removed."""
    return answer_of(text) == answer.replace(",", "").strip()


# All questions; on ProsQA, those with and without the one-hop shortcut, and of the latter those whose options lie
# as deep (data.deeper_option is None): the questions neither cheap rule answers, where only the search gets them.
SPLIT_GROUPS = ("", "_shortcut", "_no_shortcut", "_depth_tie")


def accuracy_counts(records, correct):
    """Correct answers and questions: in all, and on ProsQA records split by data.has_shortcut and
    data.deeper_option. Counts, so that shards of a validation set can be summed."""
    counts = {f"{what}{group}": 0 for group in SPLIT_GROUPS for what in ("correct", "n")}
    for r, ok in zip(records, correct):
        if "edges" not in r:  # no graph, no split (ProntoQA, GSM8k)
            groups = ("",)
        elif data.has_shortcut(r):
            groups = ("", "_shortcut")
        else:
            groups = ("", "_no_shortcut") + (("_depth_tie",) if data.deeper_option(r) is None else ())
        for group in groups:
            counts["correct" + group] += int(ok)
            counts["n" + group] += 1
    return counts


def accuracies(counts):
    """accuracy and n; on ProsQA also accuracy_shortcut / n_shortcut, accuracy_no_shortcut / n_no_shortcut and
    accuracy_depth_tie / n_depth_tie. A score can be right and measure the wrong thing: a model that learned the
    one-hop rule scores ~1 with the shortcut and chance (0.5) without it; one that learned the depth rule
    scores chance on the depth ties; a model that searched scores alike on all."""
    out = {}
    for group in SPLIT_GROUPS:
        if group and not counts["n_shortcut"] + counts["n_no_shortcut"]:
            continue  # not ProsQA
        n = counts["n" + group]
        out["accuracy" + group] = counts["correct" + group] / n if n else None
        out["n" + group] = n
    return out


def fmt_acc(x):
    return "-" if x is None else f"{x:.3f}"


def split_text(acc, accuracy="accuracy", n="n"):
    """`0.612 (with the one-hop shortcut 0.981 of 104, without 0.514 of 396; neither rule 0.500 of 240)`: how
    accuracies are printed. The keys are accuracies()'s, or metrics.jsonl's with accuracy="val_acc", n="val_n"."""
    if n + "_shortcut" not in acc:
        return fmt_acc(acc[accuracy])
    return (f"{fmt_acc(acc[accuracy])} (with the one-hop shortcut {fmt_acc(acc[accuracy + '_shortcut'])} of "
            f"{acc[n + '_shortcut']}, without {fmt_acc(acc[accuracy + '_no_shortcut'])} of {acc[n + '_no_shortcut']}"
            + (f"; neither rule {fmt_acc(acc[accuracy + '_depth_tie'])} of {acc[n + '_depth_tie']})"
               if n + "_depth_tie" in acc else ")"))


@torch.no_grad()
def generate_texts(coconut, tok, samples, stage, meta, device, max_new_tokens, latents=None, bf16=True):
    """Greedy outputs for tokenized samples, decoded as the method does at `stage`.

    latents=k forces k thoughts (the §5 analyses). Returns ([(text, new tokens)], forward passes).
    """
    if latents is not None:
        prompts = [{"input_ids": data.thought_prefix(s, latents, True, tok.special)} for s in samples]
    else:
        prompts = [data.build_prompt(s, stage, data.curriculum_of(meta), tok.special) for s in samples]
    with autocast(device, bf16):
        gen = coconut.generate(**batch_on(prompts, tok, device), max_new_tokens=max_new_tokens)
    texts = [(tok.decode(gen.tokens[r, :gen.lengths[r]].tolist(), skip_special=True), int(gen.lengths[r]))
             for r in range(len(samples))]
    return texts, gen.n_passes


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
        batch = batch_on(examples, tok, device)
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

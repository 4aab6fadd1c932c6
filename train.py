"""Training: the multi-stage curriculum of Coconut and every baseline of the paper's Table 1 (paper §3-4).

Stage k replaces the first k reasoning steps by k*c continuous thoughts; the stage of an epoch is
epoch // epochs_per_stage, and the optimizer is rebuilt whenever the stage changes (§3 "Training Procedure").

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
import time

import torch
import torch.distributed as dist

import data
from coconut import Coconut
from model import GPT, GPTConfig, EOS_ID, LATENT_ID, START_LATENT_ID, END_LATENT_ID, HF_REPOS, download_gpt2

# The paper's recipes (GPT-2 124M, AdamW lr 1e-4, weight decay 0.01, effective batch 128).
PAPER = {
    "prosqa": dict(c=1, max_latent_stage=6, epochs_per_stage=5, num_epochs=50, max_new_tokens=128),
    "prontoqa": dict(c=1, max_latent_stage=6, epochs_per_stage=5, num_epochs=50, max_new_tokens=128),
    "gsm8k": dict(c=2, max_latent_stage=3, epochs_per_stage=3, num_epochs=25, max_new_tokens=64),
}
# A CPU with no network: a from-scratch GPT-2-shaped model on ProsQA-mini (smaller graphs from our
# generator), so that a whole curriculum fits in minutes. Flags given explicitly still win.
LAPTOP = dict(nodes=(6, 9), path=(2, 3), train_size=8000, val_size=200, test_size=500, c=1, max_latent_stage=3,
              epochs_per_stage=1, num_epochs=5, batch_size=32, micro_batch=32, lr=1e-3, max_new_tokens=48)
TINY = dict(n_layer=4, n_head=4, n_embd=128, block_size=1024)  # --model tiny; sizes overridable by flags
FEEDBACK_METHODS = ("coconut", "no-curriculum")  # thoughts receive hidden states
PAUSE_METHODS = ("pause", "pause-as-thought")  # thought slots keep the <|latent|> embedding


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="prosqa", help="prosqa | prontoqa | gsm8k")
    p.add_argument("--method", default="coconut", help=" | ".join(data.METHODS))
    p.add_argument("--c", type=int, default=None, help="continuous thoughts per reasoning step")
    p.add_argument("--max_latent_stage", type=int, default=None)
    p.add_argument("--epochs_per_stage", type=int, default=None)
    p.add_argument("--num_epochs", type=int, default=None)
    p.add_argument("--pad_latent_to_max", type=int, default=1, help="past the last stage keep max_stage*c thoughts")
    p.add_argument("--uniform_prob", type=float, default=0.0, help="probability of a random stage per sample")
    p.add_argument("--latent_stop", default="fixed", choices=("fixed", "classifier"),
                   help="leave latent mode after a fixed number of thoughts, or when a trained classifier says so")
    p.add_argument("--icot_tokens_per_stage", type=int, default=8, help="--method icot: tokens removed per epoch")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--batch_size", type=int, default=None, help="effective batch (paper: 128)")
    p.add_argument("--micro_batch", type=int, default=None, help="per device per step; the rest is accumulation")
    p.add_argument("--model", default="auto", help="auto | tiny | gpt2 | gpt2-medium | ... | a Hugging Face folder")
    p.add_argument("--n_layer", type=int, default=TINY["n_layer"], help="--model tiny: layers")
    p.add_argument("--n_embd", type=int, default=TINY["n_embd"], help="--model tiny: width")
    p.add_argument("--n_head", type=int, default=TINY["n_head"], help="--model tiny: attention heads")
    p.add_argument("--init_from", default=None, help="a checkpoint (.pt or run folder) to start from, e.g. CoT")
    p.add_argument("--start_epoch", type=int, default=None,
                   help="first epoch to train; with --init_from it defaults to epochs_per_stage: the checkpoint "
                        "already is stage 0 (the paper's GSM8k recipe)")
    p.add_argument("--bf16", type=int, default=1, help="bf16 autocast on CUDA (0: fp32, as the reference's configs)")
    p.add_argument("--device", default=None, help="cuda | mps | cpu (default: the best available)")
    p.add_argument("--data_dir", default=None, help="where <dataset>_{train,valid,test}.json live")
    p.add_argument("--train_size", type=int, default=None, help="use the first N training records")
    p.add_argument("--val_size", type=int, default=None, help="use the first N validation records")
    p.add_argument("--nodes", type=int, nargs=2, default=None, help="generated ProsQA graph sizes (min max)")
    p.add_argument("--path", type=int, nargs=2, default=None, help="generated ProsQA path lengths (min max)")
    p.add_argument("--max_new_tokens", type=int, default=None)
    p.add_argument("--out_dir", default=None, help="default out/<dataset>-<method>-c<c>")
    p.add_argument("--resume", action="store_true", help="continue from out_dir/last.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop_after_epoch", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a kill
    return p.parse_args(argv)


def autocast(device, bf16=True):
    """bf16 autocast on CUDA (the default); a no-op on other devices or with --bf16 0."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda") and bool(bf16))


def fail(msg):
    raise SystemExit(f"error: {msg}")


def pick_device(requested):
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            fail(f"--device {requested}: CUDA is not available")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve(args, device, log):
    """Fill unset flags: the paper's recipe, or the laptop recipe when the model is the tiny one."""
    if args.dataset not in data.DATASETS:
        fail(f"--dataset {args.dataset!r}: expected one of {', '.join(data.DATASETS)}")
    if args.method not in data.METHODS:
        fail(f"--method {args.method!r}: expected one of {', '.join(data.METHODS)}")
    if args.model == "auto":
        if device == "cpu":
            args.model = "tiny"
            log("model: tiny (a 4-layer GPT-2-shaped model from scratch), since no GPU is present; the paper's "
                "setup is --model gpt2 on a GPU")
        else:
            try:
                download_gpt2("gpt2")
                args.model = "gpt2"
            except ConnectionError as e:
                args.model = "tiny"
                log(f"model: tiny, since GPT-2's weights could not be fetched ({e}); --model gpt2 needs them")
    laptop = args.model == "tiny" and args.dataset == "prosqa" and args.data_dir is None
    recipe = dict(PAPER[args.dataset], lr=1e-4, batch_size=128, micro_batch=32 if device != "cpu" else 8)
    if laptop:
        recipe.update(LAPTOP)
    for k, v in recipe.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    args.generated_data = laptop
    if laptop:
        args.data_dir = (f"data/prosqa-mini-n{args.nodes[0]}-{args.nodes[1]}-p{args.path[0]}-{args.path[1]}"
                         f"-{args.train_size}")
        log(f"data: ProsQA-mini ({args.nodes[0]}-{args.nodes[1]} nodes, paths of {args.path[0]}-{args.path[1]} "
            f"steps) from data.py's generator in {args.data_dir}, {args.train_size} training samples: a laptop "
            "recipe; the paper's ProsQA is --model gpt2 --data_dir data")
    if args.c < 1:
        fail(f"--c {args.c}: at least one continuous thought per step")
    if args.latent_stop == "classifier" and args.method not in FEEDBACK_METHODS:
        fail(f"--latent_stop classifier: only for --method {' or '.join(FEEDBACK_METHODS)}, not {args.method}")
    if args.batch_size % args.micro_batch:
        fail(f"--batch_size {args.batch_size} is not a multiple of --micro_batch {args.micro_batch}")
    if args.start_epoch is None:
        args.start_epoch = args.epochs_per_stage if args.init_from else 0
    args.data_dir = args.data_dir or "data"
    args.out_dir = args.out_dir or os.path.join("out", f"{args.dataset}-{args.method}-c{args.c}")
    return args


def stage_for_epoch(epoch, args):
    """The curriculum: stage k for epochs [k*E, (k+1)*E), capped one past the last latent stage."""
    if args.method in ("cot", "no-cot", "pause"):
        return 0
    if args.method == "icot":
        return epoch  # one removal step per epoch
    if args.method == "no-curriculum":
        return args.max_latent_stage + 1
    return min(epoch // args.epochs_per_stage, args.max_latent_stage + 1)


def load_splits(args, tok, log):
    if args.generated_data and not os.path.exists(os.path.join(args.data_dir, "prosqa_test.json")):
        sizes = {"train": args.train_size, "valid": args.val_size, "test": LAPTOP["test_size"]}
        for s, records in data.generate_prosqa(sizes, args.seed, tuple(args.nodes), tuple(args.path)).items():
            data.write_json_atomic(records, os.path.join(args.data_dir, f"prosqa_{s}.json"))
    paths = data.ensure_dataset(args.dataset, args.data_dir, notice=log)
    graph = args.dataset == "prosqa"
    train = data.load_records(paths["train"], graph)[: args.train_size]
    valid = data.load_records(paths["valid"], graph)[: args.val_size]
    return [data.tokenize_record(tok, r) for r in train], valid, [data.tokenize_record(tok, r) for r in valid]


def build_model(args, device, log):
    """GPT-2 (released or tiny) with the three Coconut rows, wrapped in the thought loop."""
    if args.model == "tiny":
        torch.manual_seed(args.seed)
        gpt = GPT(GPTConfig(vocab_size=data.EOS_ID + 1, block_size=TINY["block_size"], n_layer=args.n_layer,
                            n_head=args.n_head, n_embd=args.n_embd))
    elif args.model in HF_REPOS or os.path.isdir(args.model):
        try:
            gpt = GPT.from_pretrained(args.model)
        except ConnectionError as e:
            fail(f"--model {args.model}: could not get the weights ({e}); download them on a machine with network "
                 "into ~/.cache/coconut/<name>/ or pass a local Hugging Face folder")
        except (ValueError, FileNotFoundError) as e:
            fail(f"--model {args.model}: {e}")
    else:
        fail(f"--model {args.model!r}: expected auto, tiny, {', '.join(HF_REPOS)} or a Hugging Face folder")
    gpt.add_token_rows(3)  # <|start-latent|>, <|end-latent|>, <|latent|> as copies of "<<"
    return Coconut(gpt, LATENT_ID, START_LATENT_ID, END_LATENT_ID, EOS_ID, pause_as_thought=args.method in PAUSE_METHODS,
                   stop_classifier=args.latent_stop == "classifier").to(device)


def checkpoint_meta(args):
    return {"method": args.method, "dataset": args.dataset, "c": args.c, "max_latent_stage": args.max_latent_stage,
            "pad_latent_to_max": args.pad_latent_to_max, "latent_stop": args.latent_stop,
            "special_ids": {"start": START_LATENT_ID, "end": END_LATENT_ID, "latent": LATENT_ID, "eos": EOS_ID}}


def save_atomic(obj, path):
    """Write to a temporary file, then rename: a kill mid-save leaves the previous checkpoint intact."""
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path):
    """A .pt file, or a run folder (its best.pt, else last.pt)."""
    if os.path.isdir(path):
        for name in ("best.pt", "last.pt"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            fail(f"{path}: no best.pt or last.pt in this folder")
    if not os.path.exists(path):
        fail(f"{path}: no such checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_weights(coconut, ckpt):
    """Copy a checkpoint's GPT weights (and stop head, if the model has one) into `coconut`."""
    coconut.model.load_state_dict(ckpt["model"])
    if coconut.stop_head is not None:
        coconut.stop_head.load_state_dict(ckpt["stop_head"])


def model_from_checkpoint(ckpt, device):
    """Rebuild exactly the model a checkpoint was trained as (used by eval.py)."""
    ids = ckpt["meta"]["special_ids"]
    coconut = Coconut(GPT(GPTConfig(**ckpt["model_config"])), ids["latent"], ids["start"], ids["end"], ids["eos"],
                      pause_as_thought=ckpt["meta"]["method"] in PAUSE_METHODS,
                      stop_classifier=ckpt["meta"].get("latent_stop") == "classifier")
    load_weights(coconut, ckpt)
    return coconut.to(device)


@torch.no_grad()
def generate_texts(coconut, samples, stage, meta, device, max_new_tokens, latents=None, bf16=True):
    """Greedy outputs for tokenized samples, decoded as the method does at `stage`.

    latents=k forces k thoughts (the §5 analyses). Returns ([(text, new tokens)], forward passes).
    """
    tok = data.Tokenizer()
    classifier = meta.get("latent_stop") == "classifier" and latents is None
    if latents is not None:
        prompts = [{"input_ids": s["question"] + [START_LATENT_ID] + [LATENT_ID] * latents + [END_LATENT_ID]}
                   for s in samples]
    elif classifier:  # the classifier decides how many thoughts follow <bot>
        prompts = [{"input_ids": s["question"] + [START_LATENT_ID]} for s in samples]
    else:
        prompts = [data.build_prompt(s, stage, meta["method"], meta["c"], meta["max_latent_stage"],
                                     bool(meta["pad_latent_to_max"])) for s in samples]
    batch = {k: v.to(device) for k, v in data.collate(prompts).items()}
    with autocast(device, bf16):
        if classifier:
            cap = min(stage, meta["max_latent_stage"]) * meta["c"]
            gen, _ = coconut.generate_adaptive(**batch, max_thoughts=cap, max_new_tokens=max_new_tokens)
        else:
            gen = coconut.generate(**batch, max_new_tokens=max_new_tokens)
    texts = [(tok.decode(gen.tokens[r, :gen.lengths[r]].tolist(), skip_special=True), int(gen.lengths[r]))
             for r in range(len(samples))]
    return texts, gen.n_passes


def micro_batches(order, examples, args, world, rank):
    """Split each optimizer step's global batch into micro-batches; rank r takes its consecutive share.

    One process with accumulation A*W sees the same micro-batches as W processes with accumulation A, so
    their averaged gradients agree.
    """
    per_rank = args.batch_size // world
    for i in range(0, len(order), args.batch_size):
        step = order[i:i + args.batch_size][rank * per_rank:(rank + 1) * per_rank]
        yield [data.collate([examples[j] for j in step[k:k + args.micro_batch]])
               for k in range(0, len(step), args.micro_batch) if step[k:k + args.micro_batch]]


@torch.no_grad()
def evaluate(coconut, valid_records, valid_tok, stage, args, device, world=1, rank=0):
    """Validation loss and generation accuracy at `stage`, sharded over ranks and summed."""
    coconut.eval()
    meta = checkpoint_meta(args)
    loss_sum, loss_n, correct, n, new_tokens = 0.0, 0, 0, 0, 0
    idx = list(range(rank, len(valid_tok), world))
    bs = args.micro_batch
    for i in range(0, len(idx), bs):
        chunk = idx[i:i + bs]
        examples = [data.build_example(valid_tok[j], stage, args.method, args.c, args.max_latent_stage,
                                       bool(args.pad_latent_to_max), icot_tokens_per_stage=args.icot_tokens_per_stage)
                    for j in chunk]
        batch = {k: v.to(device) for k, v in data.collate(examples).items()}
        with autocast(device, args.bf16):
            out = coconut(**batch, return_logits=False)
        scored = int((batch["labels"][:, 1:] != -100).sum())
        loss_sum += float(out.loss) * scored
        loss_n += scored
        texts, _ = generate_texts(coconut, [valid_tok[j] for j in chunk], stage, meta, device, args.max_new_tokens,
                                  bf16=args.bf16)
        for (text, n_new), j in zip(texts, chunk):
            correct += is_correct(text, valid_records[j]["answer"])
            n += 1
            new_tokens += n_new
    totals = torch.tensor([loss_sum, loss_n, correct, n, new_tokens], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(totals)
    loss_sum, loss_n, correct, n, new_tokens = totals.tolist()
    return {"val_loss": loss_sum / max(loss_n, 1), "val_acc": correct / max(n, 1), "val_new_tokens": new_tokens / max(n, 1)}


def answer_of(text):
    """The reference's answer extraction: the text after the last '#', commas removed."""
    return text.split("#")[-1].replace(",", "").strip()


def is_correct(text, answer):
    """The reference's accuracy: the extracted answer equals the record's, commas removed."""
    return answer_of(text) == answer.replace(",", "").strip()


def main(argv=None):
    args = get_args(argv)
    ddp = "RANK" in os.environ
    if ddp:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
    else:
        rank, world, device = 0, 1, None
    log = print if rank == 0 else (lambda *a, **k: None)
    device = device or pick_device(args.device)
    args = resolve(args, device, log)
    if args.batch_size % (args.micro_batch * world):
        fail(f"--batch_size {args.batch_size} is not a multiple of --micro_batch {args.micro_batch} x {world} processes")
    use_bf16 = device.startswith("cuda") and bool(args.bf16)

    tok = data.Tokenizer()
    train_tok, valid_records, valid_tok = load_splits(args, tok, log)
    coconut = build_model(args, device, log)
    if args.init_from:
        init = load_checkpoint(args.init_from)
        if init["model_config"]["vocab_size"] != coconut.model.config.vocab_size:
            fail(f"--init_from {args.init_from}: vocabulary of {init['model_config']['vocab_size']} rows, this "
                 f"model has {coconut.model.config.vocab_size}")
        coconut.model.load_state_dict(init["model"])
    # sequences longer than the context are an error before training starts
    final_stage = stage_for_epoch(args.num_epochs - 1, args)
    too_long = sum(len(data.build_example(s, st, args.method, args.c, args.max_latent_stage, True,
                                          icot_tokens_per_stage=args.icot_tokens_per_stage)["input_ids"])
                   + (args.max_new_tokens if st == final_stage else 0) > coconut.model.config.block_size
                   for s in train_tok + valid_tok for st in (0, final_stage))
    if too_long:
        fail(f"{too_long} sequences (prompt + output) exceed the model's context of {coconut.model.config.block_size}")

    os.makedirs(args.out_dir, exist_ok=True)
    last_path, best_path = os.path.join(args.out_dir, "last.pt"), os.path.join(args.out_dir, "best.pt")
    start_epoch, best_acc, stage_of_optimizer, opt_state, optimizer = args.start_epoch, -1.0, None, None, None
    if not args.resume and os.path.exists(last_path):
        fail(f"{args.out_dir} already holds a run ({last_path}); pass --resume to continue it, or --out_dir for a "
             "new one")
    if args.resume:
        if not os.path.exists(last_path):
            fail(f"--resume: {last_path} does not exist")
        ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        if ckpt["meta"]["method"] != args.method:
            fail(f"--resume: {last_path} was trained with --method {ckpt['meta']['method']}, not {args.method}")
        load_weights(coconut, ckpt)
        start_epoch, best_acc, stage_of_optimizer, opt_state = ckpt["epoch"] + 1, ckpt["best_acc"], ckpt["stage"], ckpt["optimizer"]
    model = torch.nn.parallel.DistributedDataParallel(coconut) if ddp else coconut
    if rank == 0:
        with open(os.path.join(args.out_dir, "config.json"), "w") as f:
            json.dump(vars(args), f, indent=1)
        log("config: " + " ".join(f"{k}={v}" for k, v in vars(args).items()))
        log(f"device {device}{' bf16' if use_bf16 else ''}, {world} process(es), {coconut.model.num_params() / 1e6:.1f}M "
            f"parameters, {len(train_tok)} train / {len(valid_tok)} valid samples")

    metrics_path = os.path.join(args.out_dir, "metrics.jsonl")
    if rank == 0 and not args.resume and os.path.exists(metrics_path):
        os.remove(metrics_path)
    from tqdm import tqdm
    for epoch in range(start_epoch, args.num_epochs):
        stage = stage_for_epoch(epoch, args)
        if optimizer is None or stage != stage_of_optimizer:  # a fresh AdamW at each new stage (§3)
            optimizer = torch.optim.AdamW(coconut.parameters(), lr=args.lr, weight_decay=args.weight_decay)
            if opt_state is not None and stage == stage_of_optimizer:  # resumed mid-stage: keep its moments
                optimizer.load_state_dict(opt_state)
            opt_state, stage_of_optimizer = None, stage
        # Everything random in an epoch derives from (seed, epoch): resuming needs no saved RNG state.
        rng = random.Random(args.seed * 100003 + epoch)
        examples = [data.build_example(s, stage, args.method, args.c, args.max_latent_stage,
                                       bool(args.pad_latent_to_max), rng, args.uniform_prob,
                                       args.icot_tokens_per_stage) for s in train_tok]
        order = list(range(len(examples)))
        rng.shuffle(order)
        coconut.train()
        n_steps = math.ceil(len(order) / args.batch_size)
        bar = tqdm(micro_batches(order, examples, args, world, rank), total=n_steps, disable=rank != 0,
                   desc=f"epoch {epoch + 1}/{args.num_epochs} stage {stage}", leave=False)
        t0, tokens, loss_sum = time.time(), 0, 0.0
        for micro in bar:
            for k, batch in enumerate(micro):
                batch = {key: v.to(device) for key, v in batch.items()}
                sync = k == len(micro) - 1
                ctx = model.no_sync() if ddp and not sync else torch.enable_grad()
                with ctx, autocast(device, args.bf16):
                    out = model(**batch, return_logits=False)
                    (out.loss / len(micro)).backward()  # each micro-batch's mean, averaged (the reference's way)
                loss_sum += float(out.loss.detach()) / len(micro)
                tokens += int(batch["attention_mask"].sum())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed = time.time() - t0
            bar.set_postfix(loss=f"{float(out.loss.detach()):.3f}", tok_s=f"{tokens * world / max(elapsed, 1e-9):.0f}")
        train_loss = loss_sum / n_steps
        m = evaluate(coconut, valid_records, valid_tok, stage, args, device, world, rank)
        m = {"epoch": epoch + 1, "stage": stage, "train_loss": train_loss, **m, "seconds": time.time() - t0}
        if rank == 0:
            log(f"epoch {epoch + 1:3d} | stage {stage} | train loss {train_loss:.4f} | val loss {m['val_loss']:.4f} | "
                f"val acc {m['val_acc']:.3f} | new tokens {m['val_new_tokens']:.1f} | {m['seconds']:.0f}s")
            with open(metrics_path, "a") as f:
                f.write(json.dumps(m) + "\n")
            state = {"model": coconut.model.state_dict(), "model_config": vars(coconut.model.config),
                     "meta": {**checkpoint_meta(args), "stage": stage}, "args": vars(args), "epoch": epoch,
                     "stage": stage, "optimizer": optimizer.state_dict(),
                     "best_acc": max(best_acc, m["val_acc"]) if stage == final_stage else best_acc}
            if coconut.stop_head is not None:
                state["stop_head"] = coconut.stop_head.state_dict()
            if stage == final_stage and m["val_acc"] > best_acc:  # best among epochs evaluated as at the end
                save_atomic(state, best_path)
            save_atomic(state, last_path)
        if stage == final_stage:
            best_acc = max(best_acc, m["val_acc"])
        if args.stop_after_epoch is not None and epoch + 1 >= args.stop_after_epoch:
            break
    if ddp:
        dist.barrier()  # rank 0 may still be saving; tearing gloo down under it aborts the other rank
        dist.destroy_process_group()
    return best_acc


if __name__ == "__main__":
    try:
        main()
    except data.DataError as e:
        fail(str(e))

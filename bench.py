"""Benchmarks: what the continuous-thought loop costs, and what batched cached decoding buys (paper §3, App. B).

    python bench.py            # prints a table and, last, one summary line
    python bench.py --quick    # fewer repetitions and questions

1. A Coconut training step (forward+backward) with 6 thoughts ÷ a plain forward+backward over the same
   tokens, at the tiny preset and at GPT-2 124M shape (random weights). Target <= 1.2.
2. Batched, cached generation ÷ batch-1 generation that reruns the whole prefix per token (the reference's
   way) on 64 ProsQA questions: the answers must be identical. Target >= 10x.
3. Peak memory of a training step at both shapes (resident set size of a fresh process on CPU; CUDA's
   allocator peak on a GPU).
4. Padding: the share of pad positions in one epoch of the laptop recipe's batches (ProsQA-mini, words
   vocabulary, CoT and Coconut's last stage), with and without train.py's --bucket.
Ratios, not seconds: machines are noisy, ratios hold.
"""

import argparse
import os
import random
import subprocess
import sys
import time

import torch

import data
import tasks
from coconut import Coconut, greedy_uncached
from model import GPT, GPTConfig
from data import ArgumentParser, positive_int, run_command, switch
from run import LAPTOP, TINY, batch_on, pick_device  # the laptop recipe, measured exactly as a run does it

EOS_ID, START_LATENT_ID, END_LATENT_ID, LATENT_ID = data.GPT2_SPECIAL

SHAPES = {"tiny": {k: TINY[k] for k in ("n_layer", "n_head", "n_embd")},
          "gpt2-124M": dict(n_layer=12, n_head=12, n_embd=768)}


def make_model(shape, device, pause=False):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=EOS_ID + 1, **SHAPES[shape]))
    gpt.add_token_rows(3, init_from=data.GPT2_INIT_ID)
    return Coconut(gpt, LATENT_ID, START_LATENT_ID, END_LATENT_ID, EOS_ID, pause_as_thought=pause).to(device)


def training_batch(records, tok, batch_size, device):
    samples = [data.tokenize_record(tok, r) for r in records[:batch_size]]
    return batch_on([data.build_example(s, 6, data.Curriculum("coconut", c=1, max_latent_stage=6)) for s in samples],
                    tok, device)


def time_steps(coconut, batch, reps, device):
    """Seconds per training step (forward+backward); step_ratio has run (and compiled) each model once before."""
    def step():
        out = coconut(**batch, return_logits=False)
        out.loss.backward()
        coconut.zero_grad(set_to_none=True)
    t = time.perf_counter()
    for _ in range(reps):
        step()
    sync(device)
    return (time.perf_counter() - t) / reps


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def step_ratio(shape, records, tok, device, reps, batch_size, compiled=False):
    """(Coconut step / plain step, plain seconds, Coconut seconds, batch shape, seconds spent compiling)."""
    batch = training_batch(records, tok, batch_size, device)
    coconut = make_model(shape, device)
    if compiled:
        coconut.model.compile(dynamic=True)  # train.py --compile 1
    # the same tokens in one pass: thought slots keep their embedding (pause-as-thought)
    plain = Coconut(coconut.model, LATENT_ID, START_LATENT_ID, END_LATENT_ID, EOS_ID, pause_as_thought=True)
    t = time.perf_counter()
    for m in (plain, coconut):  # warm-up; with torch.compile the first call of each shape compiles
        m(**batch, return_logits=False).loss.backward()
        m.zero_grad(set_to_none=True)
    sync(device)
    t_compile = time.perf_counter() - t
    t_plain, t_coconut = [], []
    for _ in range(2):  # interleaved, best of: noise on a shared machine only ever adds time
        t_plain.append(time_steps(plain, batch, reps, device))
        t_coconut.append(time_steps(coconut, batch, reps, device))
    return min(t_coconut) / min(t_plain), min(t_plain), min(t_coconut), batch["input_ids"].shape, t_compile


def peak_memory(shape, device, batch_size):
    """Run one training step in a fresh process and report its peak memory in MB."""
    code = (f"import bench, torch, data, json, resource;"
            f"r = data.load_records(bench.prosqa_path()) if bench.prosqa_path() else bench.generated();"
            f"tok = data.Tokenizer(); b = bench.training_batch(r, tok, {batch_size}, '{device}');"
            f"m = bench.make_model('{shape}', '{device}'); o = m(**b, return_logits=False); o.loss.backward();"
            f"cuda = '{device}'.startswith('cuda');"
            f"print(json.dumps(torch.cuda.max_memory_allocated() / 2**20 if cuda else "
            f"resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    return float(out.stdout.strip().splitlines()[-1])


def mini_examples(stage, n_records=2048):
    """The laptop recipe's training examples at `stage`: ProsQA-mini in the words vocabulary."""
    records = tasks.generate_prosqa({"train": n_records}, 0, LAPTOP["nodes"], LAPTOP["path"])["train"]
    tok = data.Tokenizer.build("words", [t for r in records for t in data.record_texts(r)])
    cur = data.Curriculum("coconut", 1, LAPTOP["max_latent_stage"])
    return [data.build_example(data.tokenize_record(tok, r), stage, cur, special=tok.special) for r in records], tok


def padding_share(examples, tok, batch_size, bucket):
    """Share of pad positions over one epoch of train.py's batches of these examples."""
    masks = [data.collate([examples[i] for i in b], tok.eos_id, tok.special.latent)["attention_mask"]
             for b in data.example_batches(examples, batch_size, bucket, random.Random(0), tok.special.latent)]
    return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def prosqa_path():
    for p in ("data/prosqa_valid.json", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared",
                                                      "data", "prosqa_valid.json")):
        if os.path.exists(p):
            return p
    return None


def generated():
    return tasks.generate_prosqa({"valid": 64}, seed=0)["valid"]


def step_table(args, records, tok):
    """Table 1: the training step's cost at both shapes (and compiled, with --compile 1); returns the eager rows."""
    reps = 1 if args.quick else 2
    rows = []
    for shape, bs in (("tiny", 16), ("gpt2-124M", 8 if args.device == "cpu" else 32)):
        ratio, t_plain, t_coco, dims, _ = step_ratio(shape, records, tok, args.device, reps, bs)
        mem = peak_memory(shape, args.device, bs)
        rows.append((shape, ratio, t_plain, t_coco, dims, mem))
        if args.compile:
            c_ratio, c_plain, c_coco, _, t_compile = step_ratio(shape, records, tok, args.device, reps, bs, True)
            rows.append((f"{shape}, compiled ({t_compile:.0f} s to compile)", c_ratio, c_plain, c_coco, dims, None))
    print("\n| shape | batch x tokens | plain fwd+bwd (s) | Coconut 6 thoughts (s) | ratio | peak MB |")
    print("|---|---|---|---|---|---|")
    for shape, ratio, t_plain, t_coco, dims, mem in rows:
        print(f"| {shape} | {dims[0]} x {dims[1]} | {t_plain:.3f} | {t_coco:.3f} | {ratio:.2f} | "
              f"{'' if mem is None else f'{mem:.0f}'} |")
    return [r for r in rows if r[5] is not None]


def generation_table(args, records, tok):
    """Table 2: batched, cached generation against the reference's batch-1 uncached decoding, same answers.
    Returns (speed-up, answers identical)."""
    n = 16 if args.quick else args.questions
    coconut = make_model("tiny", args.device).eval()
    samples = [data.tokenize_record(tok, r) for r in records[:n]]
    prompts = [data.build_prompt(s, data.final_stage(6), data.Curriculum("coconut", c=1, max_latent_stage=6))
               for s in samples]
    t = time.perf_counter()
    batch = batch_on(prompts, tok, args.device)
    gen = coconut.generate(**batch, max_new_tokens=args.max_new_tokens)
    sync(args.device)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    reference = [greedy_uncached(coconut, pr["input_ids"], args.max_new_tokens) for pr in prompts]
    sync(args.device)
    t_ref = time.perf_counter() - t
    identical = all(gen.tokens[i, :gen.lengths[i]].tolist() == reference[i] for i in range(n))
    speedup = t_ref / t_batched
    print(f"\n| generation ({n} questions, {args.max_new_tokens} new tokens max, tiny) | seconds |")
    print("|---|---|")
    print(f"| batch-1, whole prefix per token (reference) | {t_ref:.2f} |")
    print(f"| batched, key/value cache (ours) | {t_batched:.2f} |")
    print(f"| speed-up | {speedup:.1f}x (answers identical: {identical}) |")
    return speedup, identical


def padding_table():
    """Table 3: the share of pad positions in the laptop recipe's batches, with and without --bucket."""
    print("\n| padding share (ProsQA-mini, words vocabulary) | batch 8 | batch 32 |")
    print("|---|---|---|")
    for stage, name in ((0, "stage 0 (CoT)"), (data.final_stage(LAPTOP["max_latent_stage"]), "last stage (thoughts)")):
        examples, mini_tok = mini_examples(stage)
        for bucket in (0, 1):
            shares = [padding_share(examples, mini_tok, bs, bucket) for bs in (8, 32)]
            print(f"| {name}, --bucket {bucket} | {shares[0]:.1%} | {shares[1]:.1%} |")


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda | mps | cpu (default: the best available)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--questions", type=positive_int, default=64)
    p.add_argument("--max_new_tokens", type=positive_int, default=32)
    p.add_argument("--compile", type=switch, default=0, help="1: also time the steps with the GPT torch.compile'd")
    args = p.parse_args(argv)
    args.device = pick_device(args.device)
    torch.manual_seed(0)
    path = prosqa_path()
    records = data.load_records(path) if path else generated()
    tok = data.Tokenizer()
    print(f"bench on {args.device} ({torch.get_num_threads()} threads), ProsQA questions from "
          f"{path or 'the generator'}, {time.strftime('%Y-%m-%d')}")
    rows = step_table(args, records, tok)
    speedup, identical = generation_table(args, records, tok)
    padding_table()
    tiny, gpt2 = rows
    print(f"\nstep ratio {tiny[1]:.2f} (tiny) {gpt2[1]:.2f} (gpt2) | generate speedup {speedup:.1f}x"
          f"{'' if identical else ' (ANSWERS DIFFER)'} | peak MB {tiny[5]:.0f} (tiny) {gpt2[5]:.0f} (gpt2)")
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    run_command(main)

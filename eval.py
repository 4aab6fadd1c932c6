"""Evaluation: accuracy and efficiency (paper §4, Table 1, Appendix B) and the latent-search analyses (§5).

    python eval.py --ckpt out/prosqa-coconut-c1 --split test         # accuracy, tokens, passes, time
    python eval.py --ckpt out/A --ckpt out/B --split test              # several runs: Appendix B's comparison
    python eval.py --ckpt out/prosqa-coconut-c1 --latents 0 1 2 3      # §5.1: k thoughts, then language
    python eval.py --ckpt out/prosqa-coconut-c1 --latents 0 1 2 --plot figs/   # + Figures 5, 8, 9 as PNG
"""

import argparse
import json
import os
import sys
import time
from collections import Counter
from contextlib import contextmanager

import torch

import data
import tasks
from data import ArgumentParser, fail, need, nonnegative_int, positive_int
from run import (DEFAULTS, LAPTOP_HELD_OUT, accuracies, accuracy_counts, export_run, fmt_acc,
                 generate_texts, is_correct, load_checkpoint, model_from_checkpoint, pick_device, split_text)

# ----------------------------------------------------------------------------------------------------------
# §5.1 outcome classes on ProsQA.

OUTCOMES = ("Correct Label", "Incorrect Label", "Correct Path", "Longer Path", "Hallucination", "Wrong Target")

def classify(record, text, n_latents=0):
    """One of OUTCOMES for a ProsQA record and the model's written output (after k thoughts).

    Without a written path (only '### answer') the answer decides Correct/Incorrect Label. Otherwise the
    written chain is checked edge by edge: a missing edge or a broken chain is a Hallucination; a valid chain
    ends at the target (Correct Path when as short as possible, else Longer Path) or elsewhere (Wrong
    Target). With k thoughts the chain may start mid-way: it counts if some node reachable from the root
    starts it.
    """
    # --- exercise 7: the outcome classes ---
    sym = record["idx_to_symbol"]
    index = {s: i for i, s in enumerate(sym)}
    children = data.children_of(record)
    root, target = record["root"], record["target"]
    written = text.split("#")[0].strip()
    if not written:
        return "Correct Label" if is_correct(text, record["answer"]) else "Incorrect Label"
    chain = []  # node indices: [start, next, ...]
    for i, st in enumerate(s.strip() for s in written.replace("\n", " ").split(".") if s.strip()):
        w = st.split()
        if len(w) == 4 and w[1:3] == ["is", "a"] and w[0] == sym[root] and i == 0:
            src, dst = root, w[3]
        elif len(w) == 5 and w[0] == "Every" and w[2:4] == ["is", "a"] and w[1] in index:
            src, dst = index[w[1]], w[4]
        else:
            return "Hallucination"
        if (chain and chain[-1] != src) or dst not in index or index[dst] not in children[src]:
            return "Hallucination"  # the chain breaks, or an edge that does not exist
        chain = (chain or [src]) + [index[dst]]
    if not chain:
        return "Hallucination"  # written text, but not one step in it
    start, end = chain[0], chain[-1]
    reach = data.bfs(children, root)[0]
    if start != root and (start not in reach or n_latents == 0):
        return "Hallucination"
    if end != target:
        return "Wrong Target"
    shortest = reach[target]
    length = reach[start] + len(chain) - 1  # thoughts cover root -> start
    return "Correct Path" if length == shortest else "Longer Path"
    # --- end of exercise 7 ---


# ----------------------------------------------------------------------------------------------------------
# §5.2 frontier values: how much probability the model puts on each node k steps from the entity.

def statement_lead(tok, statement, name):
    """A statement's tokens before the name of its child: "Tom is a", "Every X is a" ("Tom", "Every X" in the
    parent-child vocabulary)."""
    first = tok.encode(" " + name)[0]  # the child's name comes last; the subject's may start with the same BPE piece
    return statement[:max(i for i, t in enumerate(statement) if t == first and i > 0)]


def concept_lead(tok, record, sample, k):
    """Step k's tokens before the concept it names, in the model's own vocabulary."""
    return statement_lead(tok, sample["steps"][k], record["steps"][k].rstrip(".").split()[-1])


@torch.no_grad()
def frontier_values(coconut, tok, record, sample, k, device, c=1):
    """After k steps' thoughts (k·c; §5 reads c = 1) the model switches to language; the value of a frontier
    node (distance k from the root) is the product of the probabilities of its name's tokens where the next
    step names a concept.

    For k = 0 that place is after 'Tom is a'; for k >= 1 after 'Every' (the model continues the chain from
    a frontier node it must name). Returns {node: value}.
    """
    sym = record["idx_to_symbol"]
    dist = data.bfs(data.children_of(record), record["root"])[0]
    frontier = [n for n, d in dist.items() if d == k]
    prompt = data.thought_prefix(sample, k * c, True, tok.special)
    lead = concept_lead(tok, record, sample, 0) if k == 0 else tok.encode("Every")
    values = {}
    for node in frontier:
        name = tok.encode(" " + sym[node])
        ids = torch.tensor([prompt + lead + name], device=device)
        logits = coconut(ids).logits[0].float().log_softmax(-1)
        start = len(prompt) + len(lead)
        values[node] = float(sum(logits[start - 1 + i, t] for i, t in enumerate(name)).exp())
    return values, dist


@torch.no_grad()
def thought_vectors(coconut, tok, sample, n_thoughts, device):
    """One question's continuous thoughts, the last hidden states fed back: (n_thoughts, n_embd)."""
    ids = data.thought_prefix(sample, n_thoughts, True, tok.special)
    out = coconut.run_thoughts(torch.tensor([ids], device=device))
    first = len(sample["question"]) + 1
    return out.inputs_embeds[0, first:first + n_thoughts]


@torch.no_grad()
def thought_distributions(coconut, tok, sample, n_thoughts, device):
    """Each continuous thought decoded through the output head (Figures 3 and 7): (n_thoughts, vocabulary)."""
    return coconut.model.lm_head(thought_vectors(coconut, tok, sample, n_thoughts, device)).float().softmax(-1)


def probe_thoughts(coconut, tok, sample, n_thoughts, device, top=3):
    """Figure 3's view: each thought's most probable tokens -> [(token, prob), ...] per thought."""
    values, indices = thought_distributions(coconut, tok, sample, n_thoughts, device).topk(top, dim=-1)
    return [[(tok.decode([int(i)]), float(v)) for v, i in zip(vs, ix)] for vs, ix in zip(values, indices)]


def node_values(coconut, tok, record, sample, n_thoughts, device):
    """Figure 7's shading: per thought, the probability its decoding puts on each node's name (first token)."""
    names = [tok.encode(" " + name)[0] for name in record["idx_to_symbol"]]
    return thought_distributions(coconut, tok, sample, n_thoughts, device)[:, names].tolist()


def thought_mass(coconut, tok, records, samples, n_thoughts, device):
    """Figure 7 summed over questions: [thought][distance - 1] = (mean probability its decoding puts on the nodes
    at that distance from the person that lie on a path to the answer, and on the others). Thoughts that search
    hold the frontier, thought k on distance k; spacers ("\n", "###") hold no node at all."""
    mass = torch.zeros(n_thoughts, n_thoughts, 2)
    for r, s in zip(records, samples):
        values, on_path = node_values(coconut, tok, r, s, n_thoughts, device), leads_to_answer(r)
        for node, d in data.bfs(data.children_of(r), r["root"])[0].items():
            if 1 <= d <= n_thoughts:
                mass[:, d - 1, int(node not in on_path)] += torch.tensor([v[node] for v in values])
    return (mass / max(len(records), 1)).tolist()


@contextmanager
def thought_replaced(coconut, k, replace):
    """Inside the block, thought k (0-based) of every question is replace(thought), (B, C) -> (B, C). The thought
    loop's pass k + 1 starts at thought k (pass 0 runs up to the first), so that pass's first input is swapped;
    decoding after the thoughts feeds token ids, not embeddings, and is left alone."""
    passes = [0]

    def hook(module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        if x is None:
            return None
        passes[0] = 0 if kwargs.get("past_kv") is None else passes[0] + 1
        if passes[0] != k + 1:
            return None
        return args, {**kwargs, "inputs_embeds": torch.cat([replace(x[:, 0])[:, None], x[:, 1:]], 1)}
    handle = coconut.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def replace_report(coconut, tok, meta, records, samples, args, device, max_new):
    """--replace: accuracy with each thought in turn replaced by the embedding of its own most probable token
    ("token": is the thought one word?) or by its mean over the questions ("mean": does it carry anything about
    this question?). A thought the answer needs drops the accuracy to chance when its mean stands in."""
    n, gpt, report = meta["max_latent_stage"] * meta["c"], coconut.model, {}
    if "mean" in args.replace:
        mean = torch.stack([thought_vectors(coconut, tok, s, n, device) for s in samples]).mean(0)  # (n, C)
    for mode in args.replace:
        for k in range(n):
            if mode == "token":
                replace = lambda t: gpt.embed(gpt.lm_head(t).argmax(-1)).to(t.dtype)  # noqa: E731
            else:
                replace = lambda t, m=mean[k]: m.to(t.dtype).expand_as(t)  # noqa: E731
            with thought_replaced(coconut, k, replace):
                _, summary = run_eval(coconut, tok, meta, records, samples, device, max_new, args.batch_size,
                                      latents=n)
            report[f"{mode} {k + 1}"] = summary
            print(f"  thought {k + 1} replaced by its {mode}: accuracy {split_text(summary)}")
    return report


def leads_to_answer(record):
    """The nodes on a path to the answer: those it can be reached from (one search up the reversed edges)."""
    up = data.adjacency(len(record["idx_to_symbol"]), [(c, p) for p, c in record["edges"]])
    return set(data.bfs(up, record["target"])[0])


def node_height(record):
    """Shortest distance to a leaf (the paper defines height inconsistently; this is our reading)."""
    n = len(record["idx_to_symbol"])
    children = data.children_of(record)
    height = {}

    def h(u):
        if u not in height:
            height[u] = 0 if not children[u] else 1 + min(h(c) for c in children[u])
        return height[u]
    return {u: h(u) for u in range(n)}


# ----------------------------------------------------------------------------------------------------------

@torch.no_grad()
def run_eval(coconut, tok, meta, records, samples, device, max_new_tokens, batch_size, latents=None, bf16=True):
    """Generate for every record; return per-record outputs and summary metrics."""
    t0, n_passes, outputs = time.time(), 0, []
    for i in range(0, len(samples), batch_size):
        texts, passes = generate_texts(coconut, tok, samples[i:i + batch_size], data.final_stage(meta["max_latent_stage"]), meta,
                                       device, max_new_tokens, latents, bf16)
        outputs += texts
        n_passes += passes
    seconds = time.time() - t0
    rows = []
    for r, (text, n_new) in zip(records, outputs):
        rows.append({"output": text, "correct": is_correct(text, r["answer"]),
                     "cot_match": text.split("#")[0].strip() == "\n".join(r["steps"]), "new_tokens": n_new})
        if "edges" in r:  # the one-hop shortcut (data.has_shortcut), for Figure 5's rows
            rows[-1]["shortcut"] = data.has_shortcut(r)
    n = max(len(rows), 1)
    summary = {**accuracies(accuracy_counts(records, [row["correct"] for row in rows])),
               "cot_exact_match": sum(r["cot_match"] for r in rows) / n,
               "mean_new_tokens": sum(r["new_tokens"] for r in rows) / n,
               "forward_passes_per_batch": n_passes / max(1, -(-len(rows) // batch_size)),
               "seconds_per_question": seconds / n}
    return rows, summary


def get_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", action="append", default=[], help="a run folder or .pt; repeat to compare")
    p.add_argument("--split", default="valid", choices=tasks.SPLITS)
    p.add_argument("--data", default=None, help="a JSON file instead of the run's split (its report: "
                   "eval_<file name>.json); for ProntoQA, also a file its generator wrote (5hop_0shot_random.json)")
    p.add_argument("--latents", type=int, nargs="*", default=None, help="§5.1 sweep: force k thoughts")
    p.add_argument("--frontier", type=int, nargs="*", default=None,
                   help="§5.2: frontier values after k steps (k·c thoughts)")
    p.add_argument("--probe", type=nonnegative_int, default=0, help="decode the thoughts of the first N questions "
                   "(Fig. 3); with --plot on ProsQA, also draw each one's graph as its thoughts see it (Fig. 7)")
    p.add_argument("--replace", nargs="+", choices=("token", "mean"), default=None, help="each thought in turn "
                   "replaced by its own top token's embedding or its mean over the questions: is it a spare?")
    p.add_argument("--limit", type=positive_int, default=None, help="first N records only")
    p.add_argument("--batch_size", type=positive_int, default=64)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=".", help="where eval_<model>_<split>.json goes (never the model's folder)")
    p.add_argument("--plot", default=None, help="write figures (PNG) to this folder")
    p.add_argument("--export", default=None, metavar="DIR", help="write the --ckpt run as a shipped model: its "
                   "best checkpoint without the optimizer, config.json and metrics.jsonl")
    p.add_argument("--curves", nargs="+", default=None, metavar="RUN",
                   help="plot the learning curves of these run folders (validation accuracy) to --plot")
    p.add_argument("--x", default="epoch", choices=tuple(CURVE_AXES), help="--curves: against epochs, training "
                   "questions seen, or minutes of training (recipes compared at equal wall time)")
    args = p.parse_args(argv)
    need(args.ckpt or args.curves, "--ckpt", "(none)", "give at least one run folder or .pt (or --curves RUN...)")
    for flag in ("latents", "frontier"):
        ks = getattr(args, flag) or []
        need(all(0 <= k < 1000 for k in ks), f"--{flag}", " ".join(map(str, ks)), "thought counts from 0 to 999")
    need(args.data is None or os.path.isfile(args.data), "--data", args.data, "no such file")
    need(args.plot is None or not os.path.isfile(args.plot), "--plot", args.plot, "is a file, not a folder")
    need(not os.path.isfile(args.out), "--out", args.out, "is a file, not a folder")
    need(args.curves is None or args.plot, "--curves", " ".join(args.curves or []), "needs --plot DIR")
    for run in args.curves or []:
        for name in ("metrics.jsonl", "config.json"):  # what train.py writes into every run folder
            need(os.path.isfile(os.path.join(run, name)), "--curves", run, f"no {name} in this folder")
    return args


def eval_inputs(args, ckpt):
    """(checkpoint, data path, records, tokenized samples) with every record checked: the file
    (data.load_records) and each record's prompt plus the run's --max_new_tokens against the model's context."""
    meta, run_args = ckpt["meta"], ckpt["args"]
    if not args.data and run_args.get("generated_data") and args.split in LAPTOP_HELD_OUT:
        tasks.ensure_held_out(run_args["data_dir"], meta["dataset"], run_args["seed"], run_args["nodes"],
                              run_args["path"], LAPTOP_HELD_OUT)  # wherever it is evaluated
    data_path = args.data or os.path.join(run_args["data_dir"], f"{meta['dataset']}_{args.split}.json")
    if meta["dataset"] == "prontoqa" and isinstance(data.read_json(data_path), dict):
        records = tasks.prontoqa_file(data_path)[: args.limit]  # ProntoQA's generator wrote it
    else:
        records = data.load_records(data_path, graph=meta["dataset"] == "prosqa")[: args.limit]
    tok = data.Tokenizer.from_state(ckpt["vocab"])
    forced = max(args.latents or [0])  # --latents k: question, <|start-latent|>, k thoughts, <|end-latent|>
    block = ckpt["model_config"]["block_size"]
    samples = [data.tokenize_record(tok, r) for r in records]
    for i, sample in enumerate(samples):
        prompt = data.build_prompt(sample, data.final_stage(meta["max_latent_stage"]), data.curriculum_of(meta), tok.special)
        n = max(len(prompt["input_ids"]), len(sample["question"]) + forced + 2) + run_args["max_new_tokens"]
        if n > block:
            fail(f"{data_path}: record {i}: {n} tokens (prompt + the run's max_new_tokens "
                 f"{run_args['max_new_tokens']}) exceed the model's context of {block}")
    return ckpt, data_path, records, samples


def latent_sweep(coconut, tok, meta, records, samples, device, max_new, args, bf16):
    """§5.1, Figure 5: for each k, k thoughts then language; the written outputs classified."""
    sweep = {}
    for k in args.latents:
        rows, summary = run_eval(coconut, tok, meta, records, samples, device, max_new, args.batch_size, latents=k,
                                 bf16=bf16)
        classes = Counter(classify(r, row["output"], k) for r, row in zip(records, rows))
        sweep[k] = {**{key: v for key, v in summary.items() if key.startswith("accuracy")},
                    **{o: classes[o] / len(records) for o in OUTCOMES}}
    return sweep


def frontier_report(coconut, tok, records, samples, ks, device, c=1):
    """§5.2, Figures 8-9: per question, the frontier values after k steps' thoughts, on and off a path to the
    target."""
    report = {}
    for k in ks:
        per_q = []
        for r, s in zip(records, samples):
            values, _ = frontier_values(coconut, tok, r, s, k, device, c)
            heights, leads = node_height(r), leads_to_answer(r)
            on_path = {n for n in values if n in leads}
            per_q.append({"values": sorted(values.values(), reverse=True),
                          "on_path": [values[n] for n in on_path],
                          "off_path": [v for n, v in values.items() if n not in on_path],
                          "height_value": [(heights[n], v) for n, v in values.items()]})
        report[k] = per_q

        def mean(xs):
            return sum(xs) / max(len(xs), 1)
        print(f"  frontier k={k}: mean value on a path to the target "
              f"{mean([v for q in per_q for v in q['on_path']]):.3f}, elsewhere "
              f"{mean([v for q in per_q for v in q['off_path']]):.3f}")
    return report


def evaluate_checkpoint(path, ckpt, data_path, records, samples, args, device):
    """Accuracy and efficiency of one checkpoint on its records, the analyses asked for, eval_<split>.json
    written beside it. Returns (summary, the Figure 5 rows)."""
    meta, run_args = ckpt["meta"], ckpt["args"]
    coconut, tok = model_from_checkpoint(ckpt, device)
    coconut.eval()
    graph = meta["dataset"] == "prosqa"
    max_new, bf16 = run_args["max_new_tokens"], run_args.get("bf16", 1)
    rows, summary = run_eval(coconut, tok, meta, records, samples, device, max_new, args.batch_size, bf16=bf16)
    print(f"{path}  [{meta['method']}, {os.path.basename(data_path)}]")
    print(f"  accuracy {split_text(summary)}  CoT exact match {summary['cot_exact_match']:.3f}  "
          f"new tokens {summary['mean_new_tokens']:.1f}  passes/batch {summary['forward_passes_per_batch']:.1f}  "
          f"{summary['seconds_per_question'] * 1000:.1f} ms/question")
    report = {"data": data_path, "summary": summary, "rows": rows,
              "trained_thoughts": meta["max_latent_stage"] * meta["c"] if data.METHODS[meta["method"]].markers else 0}
    outcome_rows = []
    if graph:  # its own outputs, classified (Figure 5's CoT and No-CoT bars)
        natural = meta["max_latent_stage"] * meta["c"] if data.METHODS[meta["method"]].markers else 0
        classes = Counter(classify(r, row["output"], natural) for r, row in zip(records, rows))
        report["outcomes"] = {o: classes[o] / len(records) for o in OUTCOMES}
        outcome_rows.append((meta["method"], summary["accuracy"], report["outcomes"]))
    if args.probe:
        report.update(probe_report(coconut, tok, meta, records, samples, args, device))
    if args.replace and data.METHODS[meta["method"]].slots == "thoughts":
        report["replaced"] = replace_report(coconut, tok, meta, records, samples, args, device, max_new)
    if args.latents is not None and graph:
        report["latent_sweep"] = latent_sweep(coconut, tok, meta, records, samples, device, max_new, args, bf16)
        outcome_rows += [(f"{meta['method']} k={k}", v["accuracy"], v) for k, v in report["latent_sweep"].items()]
    if args.frontier is not None and graph:
        report["frontier"] = frontier_report(coconut, tok, records, samples, args.frontier, device, meta["c"])
    out_json = report_path(ckpt["path"], args)
    data.write_json_atomic(report, out_json, indent=1)
    print(f"  wrote {out_json}")
    if args.plot:
        plot(report, args.plot)
    return {"method": meta["method"], **summary}, outcome_rows


def probe_report(coconut, tok, meta, records, samples, args, device):
    """--probe N: the first N questions' thoughts decoded (Figure 3), their graphs shaded (Figure 7, with --plot),
    and where the thoughts land over every question."""
    report, n = {"probes": []}, meta["max_latent_stage"] * meta["c"]
    if data.METHODS[meta["method"]].slots != "thoughts":  # pauses and written steps are not fed back
        print(f"  --probe: {meta['method']} feeds no continuous thought back; nothing to decode")
        return report
    graph = meta["dataset"] == "prosqa"
    for i, (r, s) in enumerate(list(zip(records, samples))[: args.probe]):
        probes = probe_thoughts(coconut, tok, s, n, device)
        report["probes"].append(probes)
        print(f"  {r['answer']!r}: " + " | ".join(
            ", ".join(f"{t.strip() or repr(t)} {p:.2f}" for t, p in th) for th in probes))
        if graph and args.plot and n:  # Figure 7: the question's graph as each thought sees it
            plot_thought_graph(r, node_values(coconut, tok, r, s, n, device), args.plot, i)
    if graph and n:
        report["thought_mass"] = thought_mass(coconut, tok, records, samples, n, device)
        print(f"  where the thoughts land ({len(records)} questions; probability on nodes at distance d from the "
              "person, on a path to the answer / elsewhere):")
        for k, row in enumerate(report["thought_mass"]):
            print(f"    thought {k + 1}: " + ", ".join(f"d={d + 1} {on:.2f} / {off:.2f}" for d, (on, off) in
                                                  enumerate(row)))
    return report


def report_path(ckpt_path, args):
    """--out/eval_<model>_<split or --data file>.json: reports go to the working directory (or --out), never into
    the model's folder, so evaluating a shipped model leaves models/ as it was."""
    folder = os.path.dirname(os.path.abspath(ckpt_path))
    model = os.path.basename(folder) if os.path.basename(ckpt_path) in ("best.pt", "last.pt") else \
        os.path.splitext(os.path.basename(ckpt_path))[0]
    name = os.path.splitext(os.path.basename(args.data))[0] if args.data else args.split
    return os.path.join(args.out, f"eval_{model}_{name}.json")


def main(argv=None):
    args = get_args(argv)
    if args.export:
        need(len(args.ckpt) == 1, "--export", args.export, "exports one run: give exactly one --ckpt")
        print(f"wrote {export_run(args.ckpt[0], args.export)}")
        return
    device = pick_device(args.device) if args.ckpt else "cpu"
    # every checkpoint and data file is read and checked before any work
    inputs = [eval_inputs(args, load_checkpoint(path)) for path in args.ckpt]
    summaries, outcome_rows = {}, []
    for path, (ckpt, data_path, records, samples) in zip(args.ckpt, inputs):
        summaries[path], rows = evaluate_checkpoint(path, ckpt, data_path, records, samples, args, device)
        outcome_rows += rows
    if outcome_rows:  # Figure 5 as a table
        print("\n" + f"{'':22s}{'accuracy':>9s}" + "".join(f"{o:>16s}" for o in OUTCOMES))
        for name, acc, shares in outcome_rows:
            print(f"{name:22s}{acc:9.3f}" + "".join(f"{shares[o]:16.3f}" for o in OUTCOMES))
    if len(summaries) > 1:  # Appendix B: inference time per case
        split = all("n_shortcut" in s for s in summaries.values())
        print("\nmethod            accuracy" + ("  shortcut  no shortcut" if split else "") +
              "  new tokens  ms/question")
        for path, s in summaries.items():
            cells = [f"{s['accuracy']:8.3f}"] + ([f"{fmt_acc(s['accuracy_shortcut']):>8s}",
                                                  f"{fmt_acc(s['accuracy_no_shortcut']):>11s}"] if split else [])
            print(f"{s['method']:16s}  " + "  ".join(cells) +
                  f"  {s['mean_new_tokens']:10.1f}  {s['seconds_per_question'] * 1000:11.1f}")
    if args.curves:
        print(f"wrote {plot_curves(load_runs(args.curves), args.plot, args.x)}")


CURVE_AXES = {"epoch": "epoch", "questions": "training questions seen",
              "minutes": "minutes of training (the epochs' own time, validation included)"}
NOT_A_RECIPE = ("seed", "out_dir", "data_dir", "resume", "stop_after_epoch", "init_from", "device")


def curve_groups(runs, x="epoch"):
    """[(label, xs, mean, lowest, highest, stages)] of (config, metrics) runs, one group per recipe: runs whose flags
    differ only in seed (and folders) are one group, drawn as their mean and band; a label names the method and
    the flags its group differs in from the others. x: epoch, questions (seen) or minutes (the summed seconds of
    the epochs, so a run paused between epochs is measured by its own work)."""
    groups = {}
    for config, metrics in runs:
        key = json.dumps({k: v for k, v in sorted(config.items()) if k not in NOT_A_RECIPE})
        groups.setdefault(key, []).append(metrics)
    recipes = [json.loads(k) for k in groups]
    differing = sorted({k for r in recipes for k in r if k != "method" and any(o.get(k) != r[k] for o in recipes)})
    out = []
    for recipe, runs_of_group in zip(recipes, groups.values()):
        label = " ".join([recipe.get("method", "?")] + [f"{k}={recipe.get(k)}" for k in differing])
        if len(runs_of_group) > 1:
            label += f" ({len(runs_of_group)} seeds)"
        n = min(len(ms) for ms in runs_of_group)
        first = runs_of_group[0][:n]
        if x == "epoch":
            xs = [m["epoch"] for m in first]
        elif x == "questions":
            xs = [m["questions_seen"] for m in first]
        else:
            xs = [sum(m["seconds"] for m in first[:i + 1]) / 60 for i in range(n)]
        out.append((label, xs, [[ms[i] for ms in runs_of_group] for i in range(n)], [m["stage"] for m in first]))
    return out


def load_runs(runs):
    """[(config, metrics)] of run folders (what train.py writes into each)."""
    loaded = []
    for run in runs:
        with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
            metrics = [json.loads(line) for line in f if line.strip()]
        with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
            # a flag added after the run started is missing from its config: it ran with the flag's default
            loaded.append(({**DEFAULTS, **json.load(f)}, metrics))
    return loaded


def plot_curves(loaded, folder, x="epoch"):
    """Validation accuracy of each loaded run (load_runs; seeds of a recipe as a group) against epochs, questions
    seen or minutes, its stage changes marked: the learning-curve figure. On ProsQA more panels show the
    questions without the one-hop shortcut and those neither cheap rule answers, where only search scores above
    chance (each where every run logged it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(folder, exist_ok=True)
    two_options = all(c.get("dataset", "prosqa") in ("prosqa", "prontoqa") for c, _ in loaded)
    panels = [("val_acc", "all validation questions")]
    for key, title in (("val_acc_no_shortcut", "without the one-hop shortcut (needs search)"),
                       ("val_acc_depth_tie", "neither rule: no shortcut, options as deep")):
        if all(m.get(key) is not None for _, metrics in loaded for m in metrics):
            panels.append((key, title))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for label, xs, points, stages in curve_groups(loaded, x):
            values = [[m[key] for m in point] for point in points]
            line, = ax.plot(xs, [sum(v) / len(v) for v in values], marker="o", markersize=3, label=label)
            if len(values[0]) > 1:
                ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], color=line.get_color(),
                                alpha=0.2)
            for i in range(1, len(stages)):
                if stages[i] != stages[i - 1]:
                    at = (xs[i - 1] + xs[i]) / 2
                    ax.axvline(at, color=line.get_color(), alpha=0.3, linestyle="--")
                    ax.annotate(f"{label.split()[0]} stage {stages[i]}", (at, 0.02), xycoords=("data", "axes fraction"),
                                fontsize=7, color=line.get_color(), rotation=90)
        if two_options:
            ax.axhline(0.5, color="grey", linewidth=1, linestyle=":", label="chance (two options)")
        ax.set_title(title)
        ax.set_xlabel(CURVE_AXES[x])
        ax.set_ylabel("validation accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    path = os.path.join(folder, "learning_curves.png" if x == "epoch" else f"learning_curves_{x}.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot(report, folder):
    """Figures 5, 8 and 9 of a report, each readable without the text: titles, axes that say what is measured."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(folder, exist_ok=True)
    if "latent_sweep" in report:
        ks = sorted(report["latent_sweep"], key=int)
        fig, ax = plt.subplots(figsize=(6.5, 4))
        bottom = [0.0] * len(ks)
        for o in OUTCOMES:
            vals = [report["latent_sweep"][k][o] for k in ks]
            ax.bar([str(k) for k in ks], vals, bottom=bottom, label=o)
            bottom = [b + v for b, v in zip(bottom, vals)]
        labels = [str(k) for k in ks]  # int keys in memory, str keys once read back from eval_*.json
        if str(report.get("trained_thoughts")) in labels:  # the thought count it answers with at its last stage
            ax.annotate("trained for", (labels.index(str(report["trained_thoughts"])), 1.0), xytext=(0, 4),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
        ax.set_title("Figure 5: what the model writes after k continuous thoughts")
        ax.set_xlabel("continuous thoughts k before switching to language")
        ax.set_ylabel("share of questions")
        ax.set_ylim(0, 1.08)
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
        fig.savefig(os.path.join(folder, "fig5_outcomes.png"), dpi=120, bbox_inches="tight")
    for k, per_q in report.get("frontier", {}).items():
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for top in (1, 2, 3):
            cum = sorted(sum(q["values"][:top]) for q in per_q)
            ax.plot([100 * i / max(len(cum) - 1, 1) for i in range(len(cum))], cum, label=f"top-{top} nodes")
        ax.set_title(f"Figure 8: how many frontier nodes the thought keeps open (k={k})")
        ax.set_xlabel("questions, sorted by the value (percentile)")
        ax.set_ylabel("summed value of the top-n frontier nodes")
        ax.text(0.02, 0.97, "a gap between top-1 and top-2: a second\nnode kept open (a search wider than one)",
                transform=ax.transAxes, fontsize=7, va="top")
        ax.set_ylim(0, 1.05)
        ax.legend(loc="lower right")
        fig.savefig(os.path.join(folder, f"fig8_parallelism_k{k}.png"), dpi=120, bbox_inches="tight")
        fig, ax = plt.subplots(figsize=(5.5, 4))
        by_height = {}
        for q in per_q:
            for h, v in q["height_value"]:
                by_height.setdefault(h, []).append(v)
        heights = sorted(by_height)
        ax.boxplot([by_height[h] for h in heights], positions=heights, widths=0.5, showfliers=False)
        for h in heights:  # every node, jittered sideways so none hides another
            xs = [h + 0.3 * (i / max(len(by_height[h]) - 1, 1) - 0.5) for i in range(len(by_height[h]))]
            ax.scatter(xs, by_height[h], s=6, alpha=0.35, color="C0")
        ax.set_xticks(heights)
        ax.set_title(f"Figure 9: frontier value by the node's height (k={k})")
        ax.set_xlabel("height: shortest distance from the node to a leaf")
        ax.set_ylabel("frontier value (probability of its name next)")
        fig.savefig(os.path.join(folder, f"fig9_height_k{k}.png"), dpi=120, bbox_inches="tight")
    plt.close("all")



def graph_layout(record):
    """(x, y) per node: x its layer (the longest path to it from a person, so every edge points right), y its
    place in the layer."""
    children, n = data.children_of(record), len(record["idx_to_symbol"])
    layer = [0] * n
    for _ in range(n):  # relax n times: a DAG's longest paths settle
        for p, c in record["edges"]:
            layer[c] = max(layer[c], layer[p] + 1)
    rows = {}
    for node in sorted(range(n), key=lambda u: (layer[u], children[u] == [], u)):
        rows.setdefault(layer[node], []).append(node)
    return {u: (layer[u], (i + 0.5) / len(us) * max(len(v) for v in rows.values()))
            for us in rows.values() for i, u in enumerate(us)}


def plot_thought_graph(record, values, folder, index):
    """Figure 7: one question's graph once per continuous thought, each node shaded by the probability that
    thought, decoded through the output head, puts on its name; the question's person ringed in green, the
    answer in red."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(folder, exist_ok=True)
    pos, sym = graph_layout(record), record["idx_to_symbol"]
    fig, axes = plt.subplots(1, len(values), figsize=(4.2 * len(values), 3.6), squeeze=False)
    for k, (ax, probs) in enumerate(zip(axes[0], values)):
        for p, c in record["edges"]:
            ax.annotate("", pos[c], pos[p], arrowprops=dict(arrowstyle="->", color="grey", shrinkA=9, shrinkB=9))
        ring = ["green" if u == record["root"] else "red" if u == record["target"] else "black" for u in pos]
        dots = ax.scatter(*zip(*pos.values()), c=[probs[u] for u in pos], cmap="Blues", vmin=0, vmax=1, s=380,
                          edgecolors=ring, linewidths=[2.5 if r != "black" else 0.8 for r in ring], zorder=2)
        for u, (x, y) in pos.items():
            ax.annotate(f"{sym[u]}\n{probs[u]:.2f}", (x, y), xytext=(0, -21), textcoords="offset points",
                        ha="center", va="top", fontsize=7)
        ax.set_title(f"thought {k + 1}", fontsize=10)
        ax.axis("off")
        ax.margins(0.15, 0.25)
    fig.colorbar(dots, ax=axes[0].tolist(), fraction=0.02, label="probability on the node's name")
    asked = "Is " + record["question"].rsplit(" Is ", 1)[-1]
    fig.suptitle(f"Figure 7: {asked} ({record['answer']})", fontsize=10)
    path = os.path.join(folder, f"fig7_thoughts_q{index}.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path

if __name__ == "__main__":
    try:
        data.run_command(main)
    except KeyboardInterrupt:  # eval_*.json files are written whole or not at all (data.write_atomic)
        print("interrupted: the eval_*.json files written so far are complete", file=sys.stderr)
        sys.exit(130)

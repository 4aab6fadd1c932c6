"""The exercises' functions on cases drawn from a seed, so that no table of the visible tests' cases can pass.

Run in a copy of the project, it writes what that copy's exercise functions return on the cases of one seed;
classroom/grade.py runs it twice with the seed it chose, in the submission's grading copy and in the teacher's
project, and compares the two outputs case by case (exercise.CASES checks). Every case is drawn before the
exercise's code runs, from its own random.Random, so both runs see the same cases whatever that code does.
Teacher-only: a student copy does not hold this file.

    python classroom/cases.py --seed 1234 --out cases.json
"""

import argparse
import json
import os
import random
import sys
import traceback
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "tests")]

import torch  # noqa: E402

import data  # noqa: E402
from coconut import Coconut  # noqa: E402
from conftest import decoding_gpt, tiny_gpt  # noqa: E402

N_CASES = {1: 40, 2: 20, 3: 8, 4: 8, 5: 20, 6: 12, 7: 40}  # cheap functions get more cases
V, LATENT, START, END, EOS = 64, 61, 62, 63, 60


def tensors(x):
    """Nested lists of numbers, as JSON holds them."""
    return x.tolist() if torch.is_tensor(x) else x


def aligned_batch(rows):
    """Rows (token lists) padded as the collator pads them (first <|latent|> aligned), built here so that
    exercise 3's and 4's cases do not run exercise 2's code."""
    firsts = [r.index(LATENT) for r in rows if LATENT in r]
    lead = [max(firsts, default=0) - r.index(LATENT) if LATENT in r else 0 for r in rows]
    width = max(l + len(r) for l, r in zip(lead, rows))
    ids, mask, pos = [], [], []
    for l, r in zip(lead, rows):
        right = width - l - len(r)
        ids.append([EOS] * l + r + [EOS] * right)
        mask.append([0] * l + [1] * len(r) + [0] * right)
        pos.append([0] * l + list(range(len(r))) + [0] * right)
    return torch.tensor(ids), torch.tensor(mask), torch.tensor(pos)


def thought_rows(rng, max_rows=4):
    """Random rows: a question, then (or not) <|start-latent|>, 0-3 thoughts and <|end-latent|>, then a tail."""
    rows = []
    for _ in range(rng.randint(1, max_rows)):
        q = [rng.randrange(60) for _ in range(rng.randint(1, 8))]
        n = rng.randint(0, 3)
        marked = [START] + [LATENT] * n + [END] if n or rng.random() < 0.5 else []
        rows.append(q + marked + [rng.randrange(60) for _ in range(rng.randint(0, 5))])
    return rows


def case_layout(rng):
    cur = data.Curriculum(rng.choice(sorted(data.METHODS)), c=rng.randint(1, 3), max_latent_stage=rng.randint(0, 6),
                          pad_latent_to_max=rng.random() < 0.5)
    n_steps, stage = rng.randint(0, 8), rng.randint(0, 9)
    return lambda: list(data.layout(n_steps, stage, cur))


def case_collate(rng):
    examples = []
    labelled = rng.random() < 0.7
    for _ in range(rng.randint(1, 5)):
        ids = [rng.randrange(50) for _ in range(rng.randint(1, 10))]
        if rng.random() < 0.7:
            at = rng.randint(1, len(ids))
            ids = ids[:at] + [START] + [LATENT] * rng.randint(1, 3) + [END] + ids[at:]
        ex = {"input_ids": ids}
        if labelled:
            ex["labels"] = [t if rng.random() < 0.5 else -100 for t in ids]
        examples.append(ex)
    return lambda: {k: tensors(v) for k, v in data.collate(examples, EOS, LATENT).items()}


def case_run_thoughts(rng):
    seed, rows, pause = rng.randrange(10 ** 6), thought_rows(rng), rng.random() < 0.2
    ids, mask, pos = aligned_batch(rows)

    def run():
        coconut = Coconut(tiny_gpt(vocab_size=V, seed=seed, n_embd=16, n_head=2), LATENT, START, END, EOS,
                          pause_as_thought=pause)
        out = coconut.run_thoughts(ids, mask, pos)
        real = mask.bool()
        return {"hidden": tensors(out.hidden[real]), "inputs_embeds": tensors(out.inputs_embeds[real]),
                "n_passes": out.n_passes}
    return run


def case_generate(rng):
    seed, rows, eos_at = rng.randrange(10 ** 6), thought_rows(rng), rng.randint(6, 20)
    rows = [r[:r.index(END) + 1] if END in r else r for r in rows]  # prompts end after the thoughts
    ids, mask, pos = aligned_batch(rows)

    def run():
        model = decoding_gpt(seed=seed, eos_id=EOS, eos_position=eos_at, special_ids=(LATENT, START, END))
        g = Coconut(model, LATENT, START, END, EOS).generate(ids, mask, pos, max_new_tokens=8)
        return {"tokens": tensors(g.tokens), "lengths": tensors(g.lengths)}
    return run


def case_stage_for_epoch(rng):
    import train
    curricula = sorted(m for m, row in data.METHODS.items() if row.stages == "curriculum")
    method = rng.choice(sorted(data.METHODS)) if rng.random() < 0.25 else rng.choice(curricula)
    args = SimpleNamespace(method=method, max_latent_stage=rng.randint(0, 6),
                           epochs_per_stage=[rng.randint(1, 5) for _ in range(rng.randint(1, 4))])
    return lambda: [train.stage_for_epoch(e, args) for e in range(40)]


def case_optimizer_for_stage(rng):
    """A run's epochs at random stages (never decreasing), resumed once from its saved optimizer state as
    train.py resumes: for each epoch, whether a new optimizer was made and how many steps its moments saw."""
    import train
    stages = sorted(rng.randint(0, 4) for _ in range(rng.randint(2, 8)))
    resume_at = rng.randint(1, len(stages) - 1)

    def run():
        torch.manual_seed(0)
        model, args = torch.nn.Linear(3, 2), SimpleNamespace(lr=1e-3, weight_decay=0.01)
        optimizer, optimizer_stage, trace = None, None, []
        for epoch, stage in enumerate(stages):
            if epoch == resume_at:  # a new process: a fresh AdamW holding the checkpoint's state
                saved = optimizer.state_dict()
                optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
                optimizer.load_state_dict(saved)
            before = optimizer
            optimizer = train.optimizer_for_stage(optimizer, stage, optimizer_stage, model, args)
            optimizer_stage = stage
            model(torch.ones(3)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
            steps = [float(s["step"]) for s in optimizer.state_dict()["state"].values()]
            trace.append([optimizer is not before, steps])
        return trace
    return run


def case_classify(rng):
    """A generated question and a written chain: a walk from the entity (possibly the shortest path) whose first
    steps are left to k thoughts, sometimes with a wrong name or a step left out."""
    import eval as ev
    import tasks
    record = tasks.prosqa_sample(rng, nodes=(6, 9), path=(2, 3))
    children, sym = data.children_of(record), record["idx_to_symbol"]
    walk = [record["root"]]
    while children[walk[-1]] and rng.random() < 0.85 and len(walk) < 6:
        walk.append(rng.choice(children[walk[-1]]))
    if rng.random() < 0.5:
        dist = data.bfs(children, record["root"])[0]  # a shortest path, walked back from the target
        walk = [record["target"]]
        while walk[0] != record["root"]:
            walk.insert(0, next(p for p, c in record["edges"] if c == walk[0] and dist.get(p) == dist[walk[0]] - 1))
    steps = [f"{sym[walk[0]]} is a {sym[walk[1]]}."] if len(walk) > 1 else []
    steps += [f"Every {sym[a]} is a {sym[b]}." for a, b in zip(walk[1:], walk[2:])]
    cut = rng.randint(0, len(steps) if rng.random() < 0.3 else max(0, len(steps) - 1))  # label alone: 1 in ~4
    steps = steps[cut:]
    # k thoughts may stand for more or fewer edges than were cut: the chain's length counts the edges
    k = rng.randint(1, 3) if cut and rng.random() < 0.6 else cut
    if steps and rng.random() < 0.2:
        i = rng.randrange(len(steps))
        words = steps[i][:-1].split()
        words[-1] = rng.choice(sym)
        steps[i] = " ".join(words) + "."
    if len(steps) > 2 and rng.random() < 0.2:
        del steps[rng.randrange(1, len(steps) - 1)]
    answer = f"### {sym[record['root']]} is a {sym[rng.choice([record['target'], record['neg_target']])]}."
    text = "".join(s + "\n" for s in steps) + answer
    return lambda: ev.classify(record, text, k)


CASES = {1: case_layout, 2: case_collate, 3: case_run_thoughts, 4: case_generate, 5: case_stage_for_epoch,
         6: case_optimizer_for_stage, 7: case_classify}


def outputs(seed, number):
    """What exercise `number`'s function returns on each of its N_CASES[number] cases: {"ok": value} or {"error": why}."""
    rng = random.Random(f"{seed}:{number}")
    cases = [CASES[number](rng) for _ in range(N_CASES[number])]  # all drawn before any of the exercise's code runs
    results = []
    for run in cases:
        try:
            results.append({"ok": run()})
        except Exception as e:  # noqa: BLE001 (a submission may raise anything)
            results.append({"error": "".join(traceback.format_exception_only(type(e), e)).strip()[-300:]})
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    result = {str(n): outputs(args.seed, n) for n in CASES}
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()

"""The shipped models under models/: each answers its own held-out test questions exactly as often as the README
says. The questions are regenerated from the model's own generator settings (seed, graph sizes), as
`python eval.py --ckpt models/NAME --split test` does, so the count is a property of the weights, not of a file
anyone could edit."""

import json
import os

import pytest

from conftest import ROOT
import data
import eval as ev
import run
import tasks
import train

MODELS = os.path.join(ROOT, "models")

# name: (correct of 500, correct of those without the one-hop shortcut, questions without it); docs/results.md.
# ProntoQA has no such split (docs/data.md: counting answers every question), so only the first count.
SHIPPED = {
    "prosqa-mini-cot": (461, 361, 388),
    "prosqa-mini-coconut": (491, 381, 388),  # the paper's recipe, one thought a step (--c 1): it searches
    "prosqa-mini-no-cot": (306, 194, 388),  # forked from prosqa-mini-cot: at chance without it, as expected
    "prosqa-mini-coconut-analysis": (304, 192, 388),  # the paper's §5 model (--uniform_prob 0.3), forked likewise
    "prosqa-mini-coconut-frontier": (481, 369, 388),  # beyond the paper: trained with --frontier_loss 1
    "prosqa-mini-coconut-c2": (488, 378, 388),  # the paper's Coconut with two thoughts a step (--c 2): it searches
    "prosqa-mini-coconut-c2-analysis": (481, 374, 388),  # the same with --uniform_prob 0.3: §5's model that searches
    "prosqa-mini-coconut-mixed": (484, 375, 388),  # one thought a step, --uniform_prob 0.1: it searches (seed 1)
    # 10-14 nodes, 3-4 steps, where CoT errs: Coconut grown from prosqa-mini-coconut, CoT from prosqa-mini-cot
    "prosqa-hard-coconut": (470, 376, 405),
    "prosqa-hard-cot": (416, 336, 405),
    # ProntoQA, 5 hops: the CoT grown from prosqa-mini-cot's blocks (its lookup carries over)
    "prontoqa-cot": (488, None, None),
}


def test_every_folder_under_models_is_a_shipped_model_with_an_exact_score():
    folders = sorted(f for f in os.listdir(MODELS) if os.path.isdir(os.path.join(MODELS, f)))
    assert folders == sorted(SHIPPED)
    for name in folders:
        files = sorted(os.listdir(os.path.join(MODELS, name)))
        assert files == ["best.pt", "config.json", "metrics.jsonl"]
        assert os.path.getsize(os.path.join(MODELS, name, "best.pt")) < 10 * 2**20  # weights only: a few MB


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_model_answers_its_held_out_test_questions_exactly_as_reported(name, tmp_path):
    ckpt = run.load_checkpoint(os.path.join(MODELS, name))
    assert "optimizer" not in ckpt and "seen" not in ckpt
    args, meta = ckpt["args"], ckpt["meta"]
    graph = args["dataset"] == "prosqa"
    paths = tasks.ensure_held_out(str(tmp_path), args["dataset"], args["seed"], args["nodes"], args["path"],
                                  run.LAPTOP_HELD_OUT)
    records = data.load_records(paths["test"], graph=graph)
    coconut, tok = run.model_from_checkpoint(ckpt, "cpu")
    samples = [data.tokenize_record(tok, r) for r in records]
    rows, summary = ev.run_eval(coconut.eval(), tok, meta, records, samples, "cpu", args["max_new_tokens"], 64)
    correct, correct_without, n_without = SHIPPED[name]
    assert len(rows) == 500
    assert sum(row["correct"] for row in rows) == correct
    if not graph:
        return
    assert sum(1 for row in rows if not row["shortcut"]) == n_without
    assert sum(row["correct"] for row in rows if not row["shortcut"]) == correct_without


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_model_has_a_recipe_that_resolves_to_the_flags_it_was_trained_with(name, monkeypatch):
    """`python train.py --recipe NAME` trains models/NAME again: every flag its config.json records (the run's
    folder and --resume aside), with --init_from a path inside the repository."""
    monkeypatch.chdir(ROOT)  # the recipes name models/... as seen from the repository, where the README runs them
    args = train.get_args(["--recipe", name])
    train.resolve(args, "cpu")
    with open(os.path.join(MODELS, name, "config.json"), encoding="utf-8") as f:
        trained = json.load(f)
    assert args.out_dir == f"out/{name}" and args.recipe == name
    resolved = json.loads(json.dumps(vars(args)))  # as train.py writes it into config.json
    assert {k: v for k, v in resolved.items() if k not in ("out_dir", "resume", "device")} == \
        {k: v for k, v in trained.items() if k not in ("out_dir", "resume", "device")}
    assert not any(str(v).startswith(("/", "~")) for v in trained.values())  # no machine's path

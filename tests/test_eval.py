"""eval.py: the §5.1 outcome classes, §5.2 frontier values, the first step's binding, and accuracy end to end."""

import json
import os
from types import SimpleNamespace

import pytest
import torch

from conftest import TINY_FLAGS, gpt2_tokenizer, shared_file
import data
import run
import tasks
import eval as ev
import train

# Tom -> a -> b -> target; Tom -> c -> target (shorter: 2 steps via c); Tom -> d; Bob -> e -> neg
GRAPH = {"idx_to_symbol": ["Tom", "Bob", "a", "b", "c", "d", "e", "lempus", "scrompus"],
         "edges": [[0, 2], [2, 3], [3, 7], [0, 4], [4, 7], [0, 5], [1, 6], [6, 8], [5, 3]],
         "root": 0, "target": 7, "neg_target": 8, "answer": "Tom is a lempus.",
         "question": "...", "steps": ["Tom is a c.", "Every c is a lempus."]}


OUTCOME_CASES = [
    ("### Tom is a lempus.", 0, "Correct Label"),
    ("### Tom is a scrompus.", 0, "Incorrect Label"),
    ("Tom is a c.\nEvery c is a lempus.\n### Tom is a lempus.", 0, "Correct Path"),
    ("Tom is a a.\nEvery a is a b.\nEvery b is a lempus.\n### Tom is a lempus.", 0, "Longer Path"),
    ("Tom is a d.\nEvery d is a b.\nEvery b is a lempus.\n### Tom is a lempus.", 0, "Longer Path"),
    ("Tom is a a.\nEvery a is a lempus.\n### Tom is a lempus.", 0, "Hallucination"),  # no edge a -> lempus
    ("Tom is a a.\nEvery c is a lempus.\n### Tom is a lempus.", 0, "Hallucination"),  # broken chain
    ("Tom is a e.\nEvery e is a scrompus.\n### Tom is a scrompus.", 0, "Hallucination"),  # Tom -> e missing
    ("Tom is a d.\nEvery d is a b.\n### Tom is a b.", 0, "Wrong Target"),
    ("Every c is a lempus.\n### Tom is a lempus.", 1, "Correct Path"),  # partial: thought covered Tom -> c
    ("Every b is a lempus.\n### Tom is a lempus.", 1, "Longer Path"),  # b is 2 steps away: 3 > 2
    ("Every c is a lempus.\n### Tom is a lempus.", 2, "Correct Path"),  # the length counts edges, not thoughts
    ("Every e is a scrompus.\n### Tom is a scrompus.", 1, "Hallucination"),  # e is not reachable from Tom
    ("Every c is a lempus.\n### Tom is a lempus.", 0, "Hallucination"),  # without thoughts it must start at Tom
    ("Every d is a b.\n### Tom is a b.", 1, "Wrong Target"),
    (". .\n### Tom is a lempus.", 0, "Hallucination"),  # written text without a single step
]


@pytest.mark.parametrize("text,k,expected", OUTCOME_CASES)
def test_outcome_classes(text, k, expected):
    assert ev.classify(GRAPH, text, k) == expected


def test_node_height_is_shortest_distance_to_a_leaf():
    h = ev.node_height(GRAPH)
    assert h[7] == 0 and h[3] == 1 and h[4] == 1 and h[0] == 2 and h[5] == 2


def test_frontier_values_on_a_stub_model_with_known_distributions():
    """A stub whose next-token distribution is uniform over 4 tokens: every 1-token name gets 1/4, every
    2-token name 1/16 (the product over the name's tokens)."""
    tok = gpt2_tokenizer()
    record = dict(GRAPH, idx_to_symbol=["Tom", "Bob", "a", "b", "c", "d", "e", "lempus", "scrompus"])

    class Uniform(torch.nn.Module):
        def forward(self, ids):
            logits = torch.full((*ids.shape, 50260), -1e9)
            names = {t for n in ("a", "c", "d") for t in tok.encode(" " + n)}
            for t in names:
                logits[..., t] = 0.0
            logits[..., 0] = 0.0
            return type("O", (), {"logits": logits})()

    sample = data.tokenize_record(tok, record)
    values, dist = ev.frontier_values(Uniform(), tok, record, sample, 1, "cpu")
    assert set(values) == {2, 4, 5}  # the children of Tom
    for v in values.values():
        assert v == pytest.approx(0.25)


def test_with_c_thoughts_a_step_the_frontier_after_k_steps_is_read_after_k_times_c_thoughts():
    """c = 2 (two thoughts a step): the frontier k = 1 steps from the root is asked for after both of the first
    step's thoughts."""
    tok = gpt2_tokenizer()
    record = dict(GRAPH, idx_to_symbol=["Tom", "Bob", "a", "b", "c", "d", "e", "lempus", "scrompus"])
    sample = data.tokenize_record(tok, record)
    thoughts = [tok.special.latent] * 2

    class Recorder(torch.nn.Module):
        prompts = []

        def forward(self, ids):
            self.prompts.append(ids[0].tolist())
            return SimpleNamespace(logits=torch.zeros(*ids.shape, 50260))

    ev.frontier_values(Recorder(), tok, record, sample, 1, "cpu", c=2)
    expected = sample["question"] + [tok.special.start] + thoughts + [tok.special.end] + tok.encode("Every")
    assert all(p[:len(expected)] == expected for p in Recorder.prompts) and len(Recorder.prompts) == 3

def test_a_statements_lead_stops_at_its_last_name_even_where_the_subjects_first_piece_is_the_childs():
    tok = gpt2_tokenizer()  # " gorpus" and " gwompus" both start with the piece " g"
    statement = tok.encode("Every gorpus is a gwompus.")
    assert ev.statement_lead(tok, statement, "gwompus") == tok.encode("Every gorpus is a")
    words = data.Tokenizer.build("parent-child", ["Tom is a gwompus.\n", "Every gorpus is a gwompus.\n"])
    assert ev.statement_lead(words, words.encode("Tom is a gwompus."), "gwompus") == words.encode("Tom")


@pytest.fixture(scope="module")
def trained(mini_dir, tmp_path_factory):
    """A tiny Coconut trained for 2 epochs on the mini dataset, rebuilt from its checkpoint as eval.py does."""
    out = tmp_path_factory.mktemp("eval") / "run"
    train.main(TINY_FLAGS + ["--num_epochs", "2", "--max_new_tokens", "16", "--data_dir", mini_dir,
                             "--out_dir", str(out)])
    ckpt = run.load_checkpoint(str(out))
    model, tok = run.model_from_checkpoint(ckpt, "cpu")
    records = data.load_records(os.path.join(mini_dir, "prosqa_test.json"), graph=True)
    return SimpleNamespace(out=out, ckpt=ckpt, model=model.eval(), tok=tok, records=records,
                           samples=[data.tokenize_record(tok, r) for r in records])


def test_the_latent_sweep_classifies_every_question_once_and_draws_its_figures(trained, tmp_path):
    ev.main(["--ckpt", str(trained.out), "--split", "test", "--latents", "0", "1", "--frontier", "1",
             "--plot", str(tmp_path / "figs"), "--out", str(tmp_path)])
    report = json.load(open(tmp_path / "eval_run_test.json"))
    assert report["summary"]["n"] == len(trained.records) == 4
    for shares in [report["outcomes"]] + [report["latent_sweep"][k] for k in ("0", "1")]:
        assert sum(shares[o] for o in ev.OUTCOMES) == pytest.approx(1.0)  # exhaustive and disjoint
    assert sorted(os.listdir(tmp_path / "figs")) == ["fig5_outcomes.png", "fig8_parallelism_k1.png", "fig9_height_k1.png"]


def test_the_frontier_after_one_thought_is_the_entitys_children(trained):
    report = ev.frontier_report(trained.model, trained.tok, trained.records, trained.samples, [1], "cpu")
    assert [len(q["values"]) for q in report[1]] == [sum(p == r["root"] for p, _ in r["edges"]) for r in trained.records]


def test_a_probe_is_the_output_heads_softmax_of_the_fed_back_state(trained):
    model, tok, sample = trained.model, trained.tok, trained.samples[0]
    probes = ev.probe_thoughts(model, tok, sample, 2, "cpu", top=3)
    assert len(probes) == 2 and all(len(p) == 3 for p in probes)
    q = len(sample["question"])
    with torch.no_grad():
        out = model.run_thoughts(torch.tensor([sample["question"] + [tok.special.start] + [tok.special.latent] * 2]))
        expected = model.model.lm_head(out.hidden[0, q]).softmax(-1).max()  # thought 1 is the state at <|start-latent|>
    assert probes[0][0][1] == pytest.approx(float(expected), rel=1e-5)


def test_a_thought_replaced_by_its_top_tokens_embedding_is_that_token_written_in_its_place(trained):
    model, tok, sample = trained.model, trained.tok, trained.samples[0]
    prompt = data.thought_prefix(sample, 2, True, tok.special)
    k, slot = 1, len(sample["question"]) + 2  # the second thought's column
    top = int(model.model.lm_head(ev.thought_vectors(model, tok, sample, 2, "cpu")[k]).argmax())
    with torch.no_grad():
        with ev.thought_replaced(model, k, lambda t: model.model.embed(model.model.lm_head(t).argmax(-1))):
            replaced = model.run_thoughts(torch.tensor([prompt]))
        written = model.run_thoughts(torch.tensor([prompt[:slot] + [top] + prompt[slot + 1:]]))
        plain = model.run_thoughts(torch.tensor([prompt]))
    assert replaced.n_passes == 3 and written.n_passes == 2  # the hook swaps an input, not the loop
    torch.testing.assert_close(replaced.hidden, written.hidden)
    torch.testing.assert_close(replaced.hidden[:, :slot], plain.hidden[:, :slot])  # what comes before is untouched


def test_each_thought_replaced_by_its_mean_over_one_question_changes_nothing(trained, tmp_path):
    ev.main(["--ckpt", str(trained.out), "--split", "test", "--limit", "1", "--replace", "token", "mean",
             "--out", str(tmp_path)])
    report, meta = json.load(open(tmp_path / "eval_run_test.json")), trained.ckpt["meta"]
    n = meta["max_latent_stage"] * meta["c"]
    assert sorted(report["replaced"]) == [f"{mode} {k}" for mode in ("mean", "token") for k in range(1, n + 1)]
    for k in range(1, n + 1):  # the mean of one question's thought is that thought
        assert report["replaced"][f"mean {k}"]["accuracy"] == report["summary"]["accuracy"]


def test_figure_7_shades_each_node_by_the_probability_a_thought_puts_on_its_name(trained, tmp_path):
    model, tok, record, sample = trained.model, trained.tok, trained.records[0], trained.samples[0]
    values = ev.node_values(model, tok, record, sample, 2, "cpu")
    probs = ev.thought_distributions(model, tok, sample, 2, "cpu")
    assert len(values) == 2 and len(values[0]) == len(record["idx_to_symbol"])
    for k in range(2):  # the probe's distribution, read at each node's name
        assert values[k] == [float(probs[k, tok.encode(" " + name)[0]]) for name in record["idx_to_symbol"]]
    pos = ev.graph_layout(record)
    assert all(pos[p][0] < pos[c][0] for p, c in record["edges"])  # every edge points right
    assert os.path.basename(ev.plot_thought_graph(record, values, str(tmp_path), 0)) == "fig7_thoughts_q0.png"


def test_where_the_thoughts_land_sums_each_nodes_probability_by_distance_and_path(monkeypatch):
    # Tom -> a -> c (the answer), Tom -> b, a -> d; Bob -> e (the other option)
    record = {"idx_to_symbol": ["Tom", "a", "b", "c", "d", "Bob", "e"], "root": 0, "target": 3, "neg_target": 6,
              "edges": [[0, 1], [0, 2], [1, 3], [1, 4], [5, 6]]}
    values = [[0.0, 0.7, 0.2, 0.0, 0.0, 0.0, 0.1],  # thought 1: a child on the path, one off it, another person's
              [0.0, 0.0, 0.0, 0.5, 0.3, 0.0, 0.0]]  # thought 2: the answer, and a grandchild off the path
    monkeypatch.setattr(ev, "node_values", lambda *a: values)
    mass = ev.thought_mass(None, None, [record, record], [None, None], 2, "cpu")
    torch.testing.assert_close(torch.tensor(mass), torch.tensor([[[0.7, 0.2], [0.0, 0.0]], [[0.0, 0.0], [0.5, 0.3]]]))


def test_batched_evaluation_equals_one_question_at_a_time(trained):
    meta, records, samples = trained.ckpt["meta"], trained.records, trained.samples
    rows, _ = ev.run_eval(trained.model, trained.tok, meta, records, samples, "cpu", 16, batch_size=4)
    singles = [ev.run_eval(trained.model, trained.tok, meta, [r], [s], "cpu", 16, batch_size=1)[0][0]
               for r, s in zip(records, samples)]
    assert [r["output"] for r in rows] == [r["output"] for r in singles]


def test_learning_curves_plot_every_run_with_its_stage_changes(tmp_path, monkeypatch):
    runs = {"coconut": [0, 0, 1, 2, 3], "cot": [0, 0, 0, 0, 0]}
    for method, stages in runs.items():
        os.makedirs(tmp_path / method)
        (tmp_path / method / "config.json").write_text(json.dumps({"method": method}))
        (tmp_path / method / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e + 1, "stage": s, "val_acc": 0.1 * e}) + "\n" for e, s in enumerate(stages)))
    plotted = []
    import matplotlib.axes
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", lambda self, x, **kw: plotted.append(x))
    ev.main(["--curves", str(tmp_path / "coconut"), str(tmp_path / "cot"), "--plot", str(tmp_path / "figs")])
    assert os.listdir(tmp_path / "figs") == ["learning_curves.png"]
    assert plotted == [2.5, 3.5, 4.5]  # between the epochs where Coconut's stage changes; CoT has none
    for method in runs:  # ProsQA's splits logged: a panel each, the stage changes marked on every one
        (tmp_path / method / "metrics.jsonl").write_text("".join(json.dumps(
            {"epoch": e + 1, "stage": s, "val_acc": 0.1, "val_acc_no_shortcut": 0.1, "val_acc_depth_tie": 0.1}) + "\n"
            for e, s in enumerate(runs[method])))
    plotted.clear()
    ev.main(["--curves", str(tmp_path / "coconut"), str(tmp_path / "cot"), "--plot", str(tmp_path / "figs")])
    assert plotted == [2.5, 3.5, 4.5] * 3


def test_curves_group_seeds_of_a_recipe_and_name_what_differs_against_minutes_or_questions():
    def run(seed, vocab, seconds):
        return ({"method": "cot", "vocab": vocab, "seed": seed, "out_dir": f"out/{seed}{vocab}"},
                [{"epoch": e + 1, "stage": 0, "val_acc": 0.5 + seed / 10, "questions_seen": 100 * (e + 1),
                  "seconds": seconds} for e in range(3)])
    groups = ev.curve_groups([run(0, "words", 60), run(1, "words", 60), run(0, "parent-child", 30)], x="minutes")
    assert [(label, xs) for label, xs, _, _ in groups] == [("cot vocab=words (2 seeds)", [1, 2, 3]),
                                                          ("cot vocab=parent-child", [0.5, 1, 1.5])]
    assert [[m["val_acc"] for m in point] for point in groups[0][2]] == [[0.5, 0.6]] * 3  # both seeds, each epoch
    assert ev.curve_groups([run(0, "words", 30)], x="questions")[0][1] == [100, 200, 300]


def test_a_run_from_before_a_flag_existed_is_labelled_with_the_flags_default(tmp_path):
    for name, config in (("old", {"method": "cot"}), ("new", {"method": "cot", "frontier_loss": 1.0})):
        os.makedirs(tmp_path / name)
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "stage": 0, "val_acc": 0.5}) + "\n")
    loaded = ev.load_runs([str(tmp_path / "old"), str(tmp_path / "new")])
    assert [label for label, *_ in ev.curve_groups(loaded)] == ["cot frontier_loss=0.0", "cot frontier_loss=1.0"]


def shortcut_record(shortcut):
    """Tom -> wumpus -> yumpus (the target); Bob -> zumpus directly (the one-hop shortcut) or through rompus."""
    names = ["Tom", "Bob", "wumpus", "yumpus", "zumpus", "rompus"]
    edges = [[0, 2], [2, 3]] + ([[1, 4]] if shortcut else [[1, 5], [5, 4]])
    said = {0: "Tom is a", 1: "Bob is a", 2: "Every wumpus is a", 5: "Every rompus is a"}
    question = " ".join(f"{said[p]} {names[c]}." for p, c in edges) + " Is Tom a yumpus or zumpus?"
    return {"question": question, "steps": ["Tom is a wumpus.", "Every wumpus is a yumpus."],
            "answer": "Tom is a yumpus.", "idx_to_symbol": names, "edges": edges, "root": 0, "target": 3,
            "neg_target": 4}


def test_accuracy_is_split_by_the_shortcut_as_counted_by_hand():
    records = [shortcut_record(s) for s in (True, True, False, False, False)]
    acc = run.accuracies(run.accuracy_counts(records, [True, False, True, True, False]))
    # both options two below a person: every question without the one-hop shortcut is a depth tie too
    assert acc == {"accuracy": 3 / 5, "n": 5, "accuracy_shortcut": 1 / 2, "n_shortcut": 2,
                   "accuracy_no_shortcut": 2 / 3, "n_no_shortcut": 3, "accuracy_depth_tie": 2 / 3, "n_depth_tie": 3}
    assert run.split_text(acc) == ("0.600 (with the one-hop shortcut 0.500 of 2, without 0.667 of 3; "
                                   "neither rule 0.667 of 3)")
    deeper = shortcut_record(False)
    deeper["idx_to_symbol"] = deeper["idx_to_symbol"] + ["gerpus"]  # Tom -> wumpus -> gerpus -> yumpus: three
    deeper["edges"] = [[0, 2], [2, 6], [6, 3], [1, 5], [5, 4]]  # below him; zumpus two below Bob: yumpus deeper
    assert not data.has_shortcut(deeper) and data.deeper_option(deeper) == 3
    split = run.accuracies(run.accuracy_counts([deeper], [True]))
    assert (split["n_no_shortcut"], split["n_depth_tie"], split["accuracy_depth_tie"]) == (1, 0, None)
    plain = run.accuracies(run.accuracy_counts([{"question": "q", "steps": [], "answer": "a"}], [True]))
    assert plain == {"accuracy": 1.0, "n": 1}  # no graph, no split (ProntoQA, GSM8k)


def test_eval_splits_a_fixed_file_as_labelled_by_hand(tmp_path):
    folder = tmp_path / "d"
    splits = tasks.generate_prosqa({"train": 8, "valid": 4}, seed=1, nodes=(6, 7), path=(2, 2))
    by_hand = [True, False, False, True, False, False]
    splits["test"] = [shortcut_record(s) for s in by_hand]
    for s, records in splits.items():
        data.write_json_atomic(records, str(folder / f"prosqa_{s}.json"))
    train.main(["--model", "tiny", "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--device", "cpu",
                "--max_latent_stage", "1", "--epochs_per_stage", "1", "--num_epochs", "1", "--batch_size", "4",
                "--micro_batch", "2", "--max_new_tokens", "8", "--data_dir", str(folder), "--out_dir", str(tmp_path / "r")])
    ev.main(["--ckpt", str(tmp_path / "r"), "--data", str(folder / "prosqa_test.json"), "--split", "test",
             "--out", str(tmp_path / "reports")])
    assert os.listdir(tmp_path / "reports") == ["eval_r_prosqa_test.json"]  # an ad hoc file's report: its name
    assert not any(f.startswith("eval_") for f in os.listdir(tmp_path / "r"))  # nothing written into the model
    report = json.load(open(tmp_path / "reports" / "eval_r_prosqa_test.json"))
    rows, summary = report["rows"], report["summary"]
    assert [row["shortcut"] for row in rows] == by_hand
    with_sc = [row["correct"] for row, s in zip(rows, by_hand) if s]
    without = [row["correct"] for row, s in zip(rows, by_hand) if not s]
    assert (summary["n"], summary["n_shortcut"], summary["n_no_shortcut"]) == (6, 2, 4)
    assert summary["accuracy_shortcut"] == sum(with_sc) / 2 and summary["accuracy_no_shortcut"] == sum(without) / 4
    assert summary["accuracy"] == (sum(with_sc) + sum(without)) / 6
    # both options two below a person: every question without the one-hop shortcut is a depth tie too
    assert (summary["n_depth_tie"], summary["accuracy_depth_tie"]) == (4, sum(without) / 4)


def test_a_prontoqa_model_is_evaluated_on_the_file_prontoqas_generator_wrote(tmp_path):
    """--data takes the official generator's own file (the 1,000 official questions): a model trained on our
    generator's questions is tested on the official ones."""
    folder, official = tmp_path / "d", shared_file("prontoqa_5hop_0shot_random_sample.json")
    records = tasks.prontoqa_from_generator(tasks.generate_prontoqa_raw(12, seed=3))
    for s, part in {"train": records[:8], "valid": records[8:10], "test": records[10:]}.items():
        data.write_json_atomic(part, str(folder / f"prontoqa_{s}.json"))
    train.main(TINY_FLAGS + ["--dataset", "prontoqa", "--vocab", "gpt2", "--method", "cot", "--num_epochs", "1",
                             "--data_dir", str(folder), "--out_dir", str(tmp_path / "r")])
    ev.main(["--ckpt", str(tmp_path / "r"), "--data", official, "--limit", "5", "--out", str(tmp_path)])
    report = json.load(open(tmp_path / "eval_r_prontoqa_5hop_0shot_random_sample.json"))
    answers = [r["answer"] for r in tasks.prontoqa_file(official)[:5]]
    assert [row["correct"] for row in report["rows"]] == [run.is_correct(row["output"], a)
                                                           for row, a in zip(report["rows"], answers)]
    assert report["summary"]["n"] == 5
    os.remove(folder / "prontoqa_test.json")  # a run's split that is gone: one line naming it
    with pytest.raises(data.DataError, match=r"prontoqa_test.json: no such file"):
        ev.main(["--ckpt", str(tmp_path / "r"), "--split", "test", "--out", str(tmp_path)])

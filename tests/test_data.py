"""data.py: tokenization, the curriculum's sequences, collation, generators and bad input."""

import json
import os
import random

import pytest

from conftest import gpt2_tokenizer, shared_file
import data
import tasks
from data import (Curriculum, Tokenizer, build_example, build_prompt, collate, tokenize_record, load_records, DataError,
                  LATENT_ID, START_LATENT_ID, END_LATENT_ID, EOS_ID, split_words)


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def prosqa():
    return load_records(shared_file("prosqa_valid.json"), graph=True)


@pytest.fixture(scope="module")
def generated():
    """ProsQA-sized records of our generator, shipped with the tests: the sequence tests never skip."""
    return load_records(os.path.join(os.path.dirname(__file__), "fixtures", "prosqa_generated.json"), graph=True)


@pytest.fixture(scope="module")
def words(generated):
    """The words vocabulary of those records: the sequence tests run offline (no GPT-2 BPE needed)."""
    return Tokenizer.build("words", [t for r in generated for t in data.record_texts(r)])


def real_records(*names):
    """Records of the real data files in ../shared, of the named datasets (default: all three)."""
    def gsm8k():
        with open(shared_file("gsm8k_icot_valid.txt")) as f:
            return tasks.gsm8k_from_icot(f.readlines(), "gsm8k_icot_valid.txt")
    loaders = {"prosqa": lambda: load_records(shared_file("prosqa_valid.json")),
               "prontoqa": lambda: tasks.prontoqa_file(shared_file("prontoqa_5hop_0shot_random_sample.json")),
               "gsm8k": gsm8k}
    return [r for name in names or loaders for r in loaders[name]()]


def test_parts_tokenized_separately_equal_the_whole_text(tok):
    # The layout: question + "\n", each step + "\n", "### " + answer. (The reference checks the string
    # question + "\n" + "\n".join(steps) + "\n### " + answer, the same text whenever there is a step; six GSM8k
    # records have none.)
    for r in real_records():
        whole = tok.encode(r["question"] + "\n" + "".join(s + "\n" for s in r["steps"]) + "### " + r["answer"]) + [EOS_ID]
        parts = tokenize_record(tok, r)
        assert parts["question"] + [t for s in parts["steps"] for t in s] + parts["answer"] == whole


def test_special_ids_decode_by_name(tok):
    ids = tok.encode("Q\n") + [START_LATENT_ID, LATENT_ID, LATENT_ID, END_LATENT_ID] + tok.encode("### A") + [EOS_ID]
    assert tok.decode(ids) == "Q\n<|start-latent|><|latent|><|latent|><|end-latent|>### A<|endoftext|>"
    assert tok.decode(ids, skip_special=True) == "Q\n### A"


@pytest.mark.parametrize("kind,datasets", [("bpe", ("prosqa", "prontoqa", "gsm8k")), ("words", ("prosqa", "prontoqa"))])
def test_compact_vocabularies_round_trip_the_text_of_every_dataset(tok, kind, datasets):
    texts = [t for r in real_records(*datasets) for t in data.record_texts(r)]
    compact = Tokenizer.build(kind, texts)
    for t in texts:
        ids = compact.encode(t)
        assert compact.decode(ids) == t == tok.decode(tok.encode(t))
        if kind == "bpe":  # the same BPE pieces as GPT-2's, renumbered
            assert [compact.pieces[i] for i in ids] == tok.encode(t)
    # pieces, then eos and the three Coconut tokens, in GPT-2's order; special rows decode by name
    n = len(compact.pieces)
    assert tuple(compact.special) == (n, n + 1, n + 2, n + 3) and compact.vocab_size == n + 4
    s = compact.special
    ids = compact.encode("Tom is a wumpus.\n") + [s.start, s.latent, s.end] + compact.encode("### Tom") + [s.eos]
    assert compact.decode(ids) == "Tom is a wumpus.\n<|start-latent|><|latent|><|end-latent|>### Tom<|endoftext|>"
    assert compact.decode(ids, skip_special=True) == "Tom is a wumpus.\n### Tom"
    assert Tokenizer.from_state(compact.state()).encode(texts[0]) == compact.encode(texts[0])


def test_a_word_vocabulary_makes_every_name_one_token_and_is_small(prosqa):
    texts = [t for r in prosqa for t in data.record_texts(r)]
    words, bpe, full = (Tokenizer.build(k, texts) for k in ("words", "bpe", "gpt2"))
    names = {n for r in prosqa for n in r["idx_to_symbol"]}
    assert all(len(words.encode(" " + n)) == 1 for n in names)
    assert sum(len(full.encode(" " + n)) for n in names) / len(names) > 2  # BPE splits them: " bompus" = " b|omp|us"
    assert words.vocab_size < 120 and bpe.vocab_size < 200 and full.vocab_size == 50260
    question = prosqa[0]["question"]
    assert len(bpe.encode(question)) == len(full.encode(question))
    assert len(words.encode(question)) < 0.7 * len(full.encode(question))


def test_the_parent_child_vocabulary_writes_each_child_right_after_its_parent_and_reads_every_text_back(generated):
    """--vocab parent-child: "Every X is a Y." as [Every, X, Y] and "Tom is a X." as [Tom, X, .], so that in every
    statement the child directly follows its parent; what the model writes reads back as the statement."""
    texts = [t for r in generated for t in data.record_texts(r)]
    words, tok = Tokenizer.build("words", texts), Tokenizer.build("parent-child", texts)
    assert all(tok.decode(tok.encode(t)) == t for t in texts)
    concept, person = generated[0]["steps"][1], generated[0]["steps"][0]  # "Every X is a Y.", "Tom is a X."
    x, y, tom = concept.split()[1], concept.rstrip(".").split()[-1], person.split()[0]
    assert [tok.pieces[i] for i in tok.encode(concept)] == ["Every", x, y] and len(words.encode(concept)) == 6
    assert [tok.pieces[i] for i in tok.encode(person)] == [tom, x, "."]
    chain = f"{person}\n{concept}\n### {generated[0]['answer']}"
    assert tok.decode(tok.encode(chain)) == chain
    ratio = sum(len(tok.encode(t)) for t in texts) / sum(len(words.encode(t)) for t in texts)
    assert 0.5 < ratio < 0.6  # the same questions in a little over half the tokens
    with pytest.raises(DataError, match="--vocab parent-child: .* does not read back from parent-child statements"):
        Tokenizer.build("parent-child", ["Every vumpus is a brimpus\n"])  # no statement without its period


def test_the_parent_child_vocabulary_names_each_prontoqa_concept_with_one_token_whatever_form_the_rule_takes():
    """ProntoQA writes a rule three ways ("Every X is a Y.", "Each X is a Y.", "Xes are Yes."): as [Every, parent,
    child, its template] (ProsQA's rule, with the rest of the form last) the concept is one token in all of them,
    and each official question reads back exactly. A "not" comes before the child (Every numpus not wooden): the
    rule giving the queried property and its distractor giving the opposite end alike, but what follows each
    rule's parent is its own in every official question (no parent has two rules led by "not"), so a rule's
    polarity is found after one token, its parent."""
    records = tasks.prontoqa_file(shared_file("prontoqa_5hop_0shot_random_sample.json"))
    texts = [t for r in records for t in data.record_texts(r)]
    words, tok = Tokenizer.build("words", texts), Tokenizer.build("parent-child", texts)
    assert all(tok.decode(tok.encode(t)) == t for t in texts)
    pieces = lambda text: [tok.pieces[i] for i in tok.encode(text)]  # noqa: E731
    assert pieces("Max is a vumpus. Each vumpus is a brimpus.") == ["Max", "vumpus", ".",
                                                                    "Every", "vumpus", "brimpus", "Each _ is a _ ."]
    assert pieces("Brimpuses are grimpuses. Every impus is an impus.") == [
        "Every", "brimpus", "grimpus", "_es are _es .", "Every", "impus", "impus", "Every _ is an _ ."]
    assert pieces("Numpuses are not wooden. Max is not wooden.") == ["Every", "numpus", "not", "wooden",
                                                                     "_es are _ .", "Max", "not", "wooden", "_ is _ ."]
    for r in records:
        p = pieces(r["question"])
        after_parent = [(p[i + 1], p[i + 2]) for i in range(len(p)) if p[i] == "Every"]
        assert len(after_parent) == 23 and len(set(after_parent)) == 23
    ratio = sum(len(tok.encode(r["question"])) for r in records) / sum(len(words.encode(r["question"])) for r in records)
    assert 0.8 < ratio < 0.82  # the same questions in about four fifths of the tokens


def test_a_checkpoint_of_the_vocabulary_under_its_old_name_pairs_loads_as_parent_child(generated):
    texts = [t for r in generated for t in data.record_texts(r)]
    tok = Tokenizer.build("parent-child", texts)
    old = Tokenizer.from_state({"kind": "pairs", "pieces": tok.pieces})  # the shipped models' checkpoints
    assert old.kind == "parent-child" and all(old.encode(t) == tok.encode(t) for t in texts)


def test_hop_tokens_name_the_nodes_at_each_distance_from_the_entity():
    # Tom -> a, c, d; a -> b, d -> b, c -> lempus, b -> lempus; Bob -> e -> scrompus (not reachable from Tom)
    record = {"idx_to_symbol": ["Tom", "Bob", "a", "b", "c", "d", "e", "lempus", "scrompus"], "root": 0,
              "edges": [[0, 2], [2, 3], [3, 7], [0, 4], [4, 7], [0, 5], [1, 6], [6, 8], [5, 3]]}
    words = Tokenizer.build("words", [" ".join(record["idx_to_symbol"]) + ".\n###"])
    name = {n: words.encode(n)[0] for n in record["idx_to_symbol"]}
    assert data.hop_tokens(words, record) == [sorted([name["a"], name["c"], name["d"]]), sorted([name["b"], name["lempus"]])]
    sample = tokenize_record(words, dict(record, question="Tom a", steps=[], answer="b."))
    assert sample["hops"] == data.hop_tokens(words, record)


def test_words_are_one_token_with_or_without_their_space_and_unknown_ones_are_named():
    compact = Tokenizer.build("words", ["Tom is a wumpus.\n", "Every wumpus is a Tom?"])
    assert compact.pieces == ["\n", ".", "?", "Every", "Tom", "a", "is", "wumpus"]
    assert compact.encode("Tom") == compact.encode(" Tom")  # a name starting a step and inside a question
    with pytest.raises(DataError, match="'zorpus' has no row in this words vocabulary"):
        compact.encode("Tom is a zorpus.")


def test_a_text_the_words_vocabulary_cannot_space_is_refused():
    gsm = [t for r in real_records("gsm8k")[:5] for t in data.record_texts(r)]
    with pytest.raises(DataError, match=r"--vocab words: '.*' is not spaced as words are rejoined .* use --vocab bpe"):
        Tokenizer.build("words", gsm)


def test_converters_match_the_reference_preprocessing():
    with open(shared_file("prontoqa_5hop_0shot_random_sample.json")) as f:
        raw = json.load(f)
    r = tasks.prontoqa_from_generator(raw)[0]
    ex = raw["example1"]["test_example"]
    assert r["question"] == ex["question"] + " True or false: Max is not wooden."
    assert r["steps"][0] == "Max is a vumpus. Each vumpus is a brimpus."
    assert r["steps"][-1] == "Max is not wooden." and len(r["steps"]) == 6
    assert r["answer"] == "True"
    with open(shared_file("gsm8k_icot_valid.txt")) as f:
        g = tasks.gsm8k_from_icot(f.readlines(), "x")
    assert len(g) == 500
    assert g[0]["steps"] == ["<<4-2=2>>", "<<2/.5=4>>", "<<12/4=3>>", "<<100*3=300>>"] and g[0]["answer"] == "300"
    splits = tasks.split_prontoqa(list(range(10000)))
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [9000, 200, 800]


# --- the curriculum's sequences ----------------------------------------------------------------------------

@pytest.mark.parametrize("stage", range(8))
def test_coconut_stage_sequences(words, generated, stage):
    for r in generated:
        s = tokenize_record(words, r)
        n = len(s["steps"])
        ex = build_example(s, stage, Curriculum("coconut", c=1, max_latent_stage=6))
        ids, labels = ex["input_ids"], ex["labels"]
        q = len(s["question"])
        thoughts = 6 if stage > 6 else stage  # pad_latent_to_max past the last stage
        assert ids[:q] == s["question"]
        assert ids[q] == START_LATENT_ID and ids[q + 1:q + 1 + thoughts] == [LATENT_ID] * thoughts
        assert ids[q + 1 + thoughts] == END_LATENT_ID
        rest = [t for st in s["steps"][min(stage, n) if stage <= 6 else n:] for t in st] + s["answer"]
        assert ids[q + 2 + thoughts:] == rest
        assert labels == [-100] * (q + 2 + thoughts) + rest


def test_c_multiplies_thoughts_and_padding_to_max_is_a_switch(words, generated):
    s = tokenize_record(words, next(r for r in generated if len(r["steps"]) == 3))
    assert build_example(s, 2, Curriculum("coconut", c=3))["input_ids"].count(LATENT_ID) == 6
    assert build_example(s, 7, Curriculum("coconut", c=2))["input_ids"].count(LATENT_ID) == 12
    assert build_example(s, 7, Curriculum("coconut", c=2, pad_latent_to_max=False))["input_ids"].count(LATENT_ID) == 6
    assert build_prompt(s, 7, Curriculum("coconut", c=1))["input_ids"] == s["question"] + [START_LATENT_ID] + [LATENT_ID] * 6 + [END_LATENT_ID]
    assert build_prompt(s, 5, Curriculum("coconut", pad_latent_to_max=False))["input_ids"].count(LATENT_ID) == 3


def test_past_the_last_stage_the_thoughts_are_capped_at_the_last_stage(words, generated):
    """Past the last stage every step goes. Padded, the thoughts stay at max_latent_stage x c; unpadded, at
    min(steps, max_latent_stage) x c (the reference's rule): a 3-step sample with max_latent_stage 2 keeps 2."""
    s = tokenize_record(words, next(r for r in generated if len(r["steps"]) == 3))
    for pad, max_stage, c, expected in [(True, 2, 1, 2), (False, 2, 1, 2), (False, 2, 2, 4), (False, 6, 1, 3),
                                        (True, 6, 2, 12), (False, 6, 2, 6)]:
        cur = Curriculum("coconut", c=c, max_latent_stage=max_stage, pad_latent_to_max=pad)
        ex = build_example(s, max_stage + 1, cur)["input_ids"]
        assert ex.count(LATENT_ID) == expected, (pad, max_stage, c)
        assert ex[-len(s["answer"]):] == s["answer"] and ex[ex.index(END_LATENT_ID) + 1:] == s["answer"]
    assert data.layout(3, 3, Curriculum("coconut", max_latent_stage=2, pad_latent_to_max=False)) == (3, 2, True)


def test_baseline_sequences(words, generated):
    s = tokenize_record(words, generated[0])
    q, steps, a = s["question"], [t for st in s["steps"] for t in st], s["answer"]
    assert build_example(s, 3, Curriculum("cot"))["input_ids"] == q + steps + a
    assert build_example(s, 3, Curriculum("no-cot")) == {"input_ids": q + a, "labels": [-100] * len(q) + a}
    assert build_example(s, 3, Curriculum("pause"))["input_ids"] == q + [LATENT_ID] * 6 + a
    assert build_example(s, 1, Curriculum("no-thought"))["input_ids"] == q + [t for st in s["steps"][1:] for t in st] + a
    assert build_example(s, 2, Curriculum("pause-as-thought")) == build_example(s, 2, Curriculum("coconut"))
    assert build_example(s, 2, Curriculum("icot", icot_tokens_per_stage=5))["input_ids"] == q + steps[10:] + a
    assert build_example(s, 99, Curriculum("icot"))["input_ids"] == q + a
    assert build_prompt(s, 7, Curriculum("cot"))["input_ids"] == q
    assert build_prompt(s, 7, Curriculum("pause"))["input_ids"] == q + [LATENT_ID] * 6


def test_stage_mixing_draws_stages_uniformly(tok, prosqa):
    s = tokenize_record(tok, prosqa[0])  # 3 steps: stages 0..3
    rng = random.Random(0)
    counts = [build_example(s, 0, Curriculum("coconut", uniform_prob=1.0), rng=rng)["input_ids"].count(LATENT_ID)
              for _ in range(2000)]
    assert set(counts) == {0, 1, 2, 3}
    assert all(abs(counts.count(k) / 2000 - 0.25) < 0.04 for k in range(4))


def test_the_step_opener_is_every_on_prosqa_the_references_row_on_gsm8k_and_none_on_prontoqa(tok):
    """The token opening steps in three questions of four, which a fork's <|start-latent|> starts as: on GSM8k it is
    "<<", the row the reference copies into its three new tokens; no token opens ProntoQA's, in either layout."""
    openers = [data.step_opener([tokenize_record(tok, r) for r in real_records(name)])
               for name in ("prosqa", "gsm8k", "prontoqa")]
    assert openers == [tok.encode("Every")[0], data.GPT2_INIT_ID, None]  # ProntoQA's open with the entity's name
    prontoqa = real_records("prontoqa")
    pairs = Tokenizer.build("parent-child", [t for r in prontoqa for t in data.record_texts(r)])
    assert data.step_opener([tokenize_record(pairs, r) for r in prontoqa]) is None
    assert data.step_opener([{"steps": []}]) is None


def test_collation_aligns_first_thought_and_pads():
    a = {"input_ids": [1, 2, 3, START_LATENT_ID, LATENT_ID, END_LATENT_ID, 9], "labels": [-100] * 6 + [9]}
    b = {"input_ids": [4, START_LATENT_ID, LATENT_ID, LATENT_ID, END_LATENT_ID, 7, 8, 9, 10],
         "labels": [-100] * 5 + [7, 8, 9, 10]}
    batch = collate([a, b])
    P = EOS_ID
    # row b's first thought is at 2, row a's at 4: b gets 2 left pads; then both are right-padded to 11
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, START_LATENT_ID, LATENT_ID, END_LATENT_ID, 9, P, P, P, P],
        [P, P, 4, START_LATENT_ID, LATENT_ID, LATENT_ID, END_LATENT_ID, 7, 8, 9, 10]]
    assert batch["attention_mask"].tolist() == [[1] * 7 + [0] * 4, [0, 0] + [1] * 9]
    assert batch["position_ids"].tolist() == [list(range(7)) + [0] * 4, [0, 0] + list(range(9))]
    assert batch["labels"].tolist() == [[-100] * 6 + [9] + [-100] * 4, [-100] * 7 + [7, 8, 9, 10]]


def test_collation_without_thoughts_only_right_pads():
    batch = collate([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}])
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, EOS_ID, EOS_ID]]
    assert set(batch) == {"input_ids", "attention_mask", "position_ids"}


# --- generators --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated_2000():
    return tasks.generate_prosqa({"train": 2000}, seed=0)["train"]


def test_generator_matches_official_statistics(generated_2000, prosqa):
    ours, official = tasks.graph_statistics(generated_2000), tasks.graph_statistics(prosqa)
    for length, share in official["path_shares"].items():
        assert abs(ours["path_shares"].get(length, 0) - share) <= 0.04, length
    assert set(ours["path_shares"]) == set(official["path_shares"])
    assert abs(ours["path"] - official["path"]) <= 0.1
    assert abs(ours["nodes"] - official["nodes"]) < 0.5
    assert (ours["nodes_min"], ours["nodes_max"]) == (official["nodes_min"], official["nodes_max"])
    assert abs(ours["edges"] - official["edges"]) < 1.5
    assert abs(ours["n_paths"] - official["n_paths"]) < 0.15


def test_every_generated_record_is_a_sound_problem(generated_2000):
    mini = tasks.generate_prosqa({"train": 500}, seed=0, nodes=(6, 9), path=(2, 3))["train"]
    for r in generated_2000 + mini:
        children = data.children_of(r)
        parents = {c for _, c in r["edges"]}
        dist, _ = data.bfs(children, r["root"])
        other = data.bfs(children, 1 - r["root"])[0]  # the other of the two first people
        assert r["root"] in (0, 1) and r["root"] not in parents
        assert r["target"] in dist and r["neg_target"] not in dist and r["neg_target"] in other
        assert r["target"] not in other  # only the entity reaches the target
        assert r["target"] in parents and r["neg_target"] in parents  # options are concepts, never people
        assert not children[r["target"]] and not children[r["neg_target"]]
        assert len(r["steps"]) == dist[r["target"]]  # a shortest path
        sym = r["idx_to_symbol"]
        entity = sym[r["root"]]
        assert r["steps"][0].startswith(f"{entity} is a ") and r["answer"] == f"{entity} is a {sym[r['target']]}."
        for step in r["steps"]:
            assert step in r["question"]  # every edge used is stated
        for p, c in r["edges"]:
            assert (f"{sym[p]} is a {sym[c]}.") in r["question"]
        assert len(set(sym)) == len(sym)
        assert r["question"].endswith("?") and sym[r["target"]] in r["question"].split("Is ")[-1]


def test_the_entity_is_the_person_with_the_farther_target(generated_2000):
    """The official splits ask about whichever of the two people has the farther eligible target."""
    def farthest_target(r, person):
        children = data.children_of(r)
        dist, other = data.bfs(children, person)[0], data.bfs(children, 1 - person)[0]
        concepts = {c for _, c in r["edges"]}
        return max((d for n, d in dist.items() if not children[n] and n not in other and n in concepts), default=-1)
    for r in generated_2000:
        assert farthest_target(r, r["root"]) == len(r["steps"]) >= farthest_target(r, 1 - r["root"])


def test_generator_is_deterministic_and_splits_disjoint():
    a = tasks.generate_prosqa({"train": 50, "valid": 20, "test": 20}, seed=3)
    b = tasks.generate_prosqa({"train": 50, "valid": 20, "test": 20}, seed=3)
    assert a == b
    qs = [r["question"] for s in a.values() for r in s]
    assert len(qs) == len(set(qs)) == 90


def chain_record(length):
    """Tom -> c1 -> ... -> c<length> (the target); Bob -> n (the negative)."""
    names = ["Tom", "Bob"] + [f"c{i}" for i in range(1, length + 1)] + ["n"]
    edges = [[0, 2]] + [[i, i + 1] for i in range(2, length + 1)] + [[1, length + 2]]
    steps = ["Tom is a c1."] + [f"Every c{i} is a c{i + 1}." for i in range(1, length)]
    return {"question": "...", "steps": steps, "answer": f"Tom is a c{length}.", "idx_to_symbol": names,
            "edges": edges, "root": 0, "target": length + 1, "neg_target": length + 2}


def test_stats_command_prints_the_histogram_of_any_file(tmp_path, capsys):
    path = tmp_path / "three.json"
    path.write_text(json.dumps([chain_record(1), chain_record(2), chain_record(2)]))
    tasks.main(["prosqa", "--stats", str(path)])
    header, rule, row = capsys.readouterr().out.strip().splitlines()
    assert header.split(" | ")[-3:] == ["1 steps", "2 steps", "one-hop shortcut |"]
    # nodes 4, 5, 5; edges 2, 3, 3; paths 1, 2, 2; one shortest path each; Bob -> n answers every one in one hop
    assert row == f"| {path} | 3 | 4.67 (4-5) | 2.67 (2-3) | 1.67 (1-2) | 1.00 (1-1) | 33.3 % | 66.7 % | 100.0 % |"


def test_generate_writes_the_splits_asked_for_and_prints_a_row_for_each(tmp_path, capsys):
    flags = ["prosqa", "--generate", "--nodes", "6", "9", "--path", "2", "3", "--train", "30", "--valid", "5",
             "--test", "5", "--seed", "2"]
    tasks.main(flags + ["--out", str(tmp_path / "a")])
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    for s, size, row in zip(("train", "valid", "test"), (30, 5, 5), rows):
        path = tmp_path / "a" / f"prosqa_{s}.json"
        records = load_records(str(path), graph=True)
        assert row.startswith(f"| {path} | {size} | ")
        assert all(6 <= len(r["idx_to_symbol"]) <= 9 and 2 <= len(r["steps"]) <= 3 for r in records)
        assert all(tasks.is_held_out(r["question"]) == (s != "train") for r in records)
    tasks.main(flags + ["--out", str(tmp_path / "b")])  # the same seed, the same files
    for s in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"prosqa_{s}.json").read_text() == (tmp_path / "b" / f"prosqa_{s}.json").read_text()


def test_generated_prontoqa_has_the_sizes_asked_for_and_holds_out_its_validation_and_test(tmp_path):
    flags = ["prontoqa", "--generate", "--train", "40", "--valid", "6", "--test", "7", "--seed", "3"]
    tasks.main(flags + ["--out", str(tmp_path / "a")])
    questions = set()
    for s, size in (("train", 40), ("valid", 6), ("test", 7)):
        records = load_records(str(tmp_path / "a" / f"prontoqa_{s}.json"))
        assert len(records) == size and all(len(r["steps"]) == 6 for r in records)
        assert all(tasks.is_held_out(r["question"]) == (s != "train") for r in records)
        questions |= {r["question"] for r in records}
    assert len(questions) == 53  # never one question twice


@pytest.mark.parametrize("flags,message", [
    (["--nodes", "4", "5"], "--nodes 4 5: MIN must be at most MAX, at least 7"),
    (["--nodes", "9", "8"], "--nodes 9 8"),
    (["--path", "0", "3"], "--path 0 3: MIN must be at least 1"),
    (["--train", "0"], "--train 0: a split holds at least 1 record"),
])
def test_impossible_generator_flags_are_named(tmp_path, flags, message):
    with pytest.raises(DataError, match=message):
        tasks.main(["prosqa", "--generate", "--out", str(tmp_path), *flags])
    assert not list(tmp_path.iterdir())


def test_a_range_no_graph_can_meet_stops_instead_of_looping():
    # 5 steps need 8 nodes: the entity, 5 concepts, the other person and a negative
    with pytest.raises(DataError, match="no graph of 6-6 nodes had a target 5-5 steps away in 10,000 draws"):
        tasks.generate_prosqa({"train": 1}, nodes=(6, 6), path=(5, 5))


def test_generator_scale_flags_make_a_mini_prosqa():
    mini = tasks.generate_prosqa({"train": 200}, seed=0, nodes=(8, 10), path=(2, 3))["train"]
    st = tasks.graph_statistics(mini)
    assert 8 <= st["nodes_min"] and st["nodes_max"] <= 10 and st["path_min"] >= 2 and st["path_max"] <= 3


def test_prontoqa_generator_matches_the_official_sample():
    with open(shared_file("prontoqa_5hop_0shot_random_sample.json")) as f:
        official = [v["test_example"] for v in json.load(f).values()]
    ours = [v["test_example"] for v in tasks.generate_prontoqa_raw(1000, seed=0).values()]
    for name, ex in (("official", official), ("ours", ours)):
        assert all(len(e["chain_of_thought"]) == 11 for e in ex), name
        assert all(e["question"].count(". ") + 1 == 25 for e in ex), name
        assert all(e["query"].startswith("True or false: ") for e in ex), name
        assert 0.45 < sum(e["answer"] == "True" for e in ex) / len(ex) < 0.55, name
    for name, ex in (("official", official), ("ours", ours)):  # "an impus", never "a impus"
        text = " ".join(e["question"] + " " + " ".join(e["chain_of_thought"]) for e in ex)
        assert "is an impus" in text and "is a impus" not in text, name
    words = {w for e in ours for t in (e["question"], e["query"], *e["chain_of_thought"]) for w in split_words(t)}
    official_words = {w for e in official for t in (e["question"], e["query"], *e["chain_of_thought"])
                      for w in split_words(t)}
    assert official_words <= words  # a model trained on ours has a row for every word of the official questions
    for e in ours:  # each rule in the chain of thought is stated in the question
        assert all(s in e["question"] for s in e["chain_of_thought"][1::2])
        final = e["chain_of_thought"][-1]
        assert (e["query"][len("True or false: "):] == final) == (e["answer"] == "True")


def test_fewer_prontoqa_hops_keep_the_official_shape_and_five_draws_the_same_questions():
    """--path on ProntoQA: a question of h hops has the official shape scaled (4h + 5 statements, a branch more
    than hops), h + 1 steps, every rule of its chain stated; (5, 5), the default, draws no hop count, so the
    5-hop questions of every seed stay what they were."""
    records = tasks.generate_prontoqa({"valid": 300}, seed=3, hops=(1, 3))["valid"]
    hops = [len(r["steps"]) - 1 for r in records]
    assert set(hops) == {1, 2, 3}
    for r, h in zip(records, hops):
        assert r["question"].count(". ") + 1 == 4 * h + 5 + 1  # the statements and the query
        assert all(s.split(". ")[1] in r["question"] for s in r["steps"][:-1])
        assert data.prontoqa_by_mentions(r) == r["answer"]
    assert tasks.generate_prontoqa({"valid": 20}, seed=3, hops=(5, 5)) == tasks.generate_prontoqa({"valid": 20}, 3)
    assert tasks.generate_prontoqa({"valid": 1}, seed=3)["valid"][0]["question"].startswith(
        "Each vumpus is a lorpus. Each impus is blue.")


def test_the_deeper_option_answers_most_official_prosqa_questions_without_the_one_hop_shortcut():
    """ProsQA's second cheap rule: the target is the farthest leaf the person reaches, so it lies deeper than the
    other option (farther from the graph's top) or as deep, never shallower; of the official validation split's
    236 questions without the one-hop shortcut the deeper option is the answer for 205, 31 tie (0.934 with ties
    guessed), so accuracy there does not measure search alone."""
    records = [r for r in real_records("prosqa") if not data.has_shortcut(r)]
    picks = [data.deeper_option(r) for r in records]
    assert len(records) == 236
    assert (sum(p == r["target"] for p, r in zip(picks, records)), picks.count(None)) == (205, 31)
    chain = {"idx_to_symbol": ["Tom", "a", "b", "c", "d"], "edges": [[0, 1], [1, 2], [2, 3], [0, 4]], "target": 3,
             "neg_target": 4}
    assert [data.depth(chain, n) for n in range(5)] == [0, 1, 2, 3, 1] and data.deeper_option(chain) == 3


def test_counting_mentions_answers_every_prontoqa_question_official_and_ours():
    """ProntoQA's one cheap rule: of the two rules naming the queried property, the one whose subject is mentioned
    more often is on the entity's chain. It answers every question, so ProntoQA accuracy cannot tell reasoning
    from counting (docs/data.md)."""
    ours = tasks.prontoqa_from_generator(tasks.generate_prontoqa_raw(300, seed=1))
    for name, records in (("official", real_records("prontoqa")), ("ours", ours)):
        assert len(records) >= 300 and all(data.prontoqa_by_mentions(r) == r["answer"] for r in records), name
    flipped = {"question": "Wumpuses are hot. Each yumpus is not hot. Rex is a wumpus. Wumpuses are jompuses. "
               "True or false: Rex is hot.", "steps": [], "answer": "True"}
    assert data.prontoqa_by_mentions(flipped) == "True"  # "wumpus" is mentioned three times, "yumpus" once
    flipped["question"] = flipped["question"].replace("Rex is hot", "Rex is not hot")
    assert data.prontoqa_by_mentions(flipped) == "False"


# --- bad input ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("records,message", [
    ({"question": "q"}, "expected a JSON list"),
    ([{"question": "q", "steps": [], "answer": "a"}, "oops"], "record 1: expected an object"),
    ([{"steps": [], "answer": "a"}], "record 0: field 'question' must be a string (missing)"),
    ([{"question": "q", "steps": "s", "answer": "a"}], "record 0: field 'steps' must be a list of strings"),
    ([{"question": "q", "steps": ["s", 3], "answer": "a"}], "field 'steps' must be a list of strings"),
    ([{"question": "q", "steps": [], "answer": 4}], "field 'answer' must be a string"),
])
def test_malformed_records_are_named(tmp_path, records, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError) as e:
        load_records(str(path))
    assert str(path) in str(e.value) and message in str(e.value)


def test_malformed_graph_fields_and_json_are_named(tmp_path, prosqa):
    bad = dict(prosqa[0], edges=[[0, 99]])
    path = tmp_path / "g.json"
    path.write_text(json.dumps([prosqa[1], bad]))
    with pytest.raises(DataError, match="record 1: field 'edges'"):
        load_records(str(path), graph=True)
    path.write_text("[{")
    with pytest.raises(DataError, match="not valid JSON"):
        load_records(str(path))
    with pytest.raises(DataError, match="no such file"):
        load_records(str(tmp_path / "missing.json"))
    with pytest.raises(DataError, match="line 2"):
        tasks.gsm8k_from_icot(["q||<<1>> #### 1\n", "no separator\n"], "g.txt")


def test_offline_prosqa_falls_back_to_the_generator_with_a_notice(tmp_path, monkeypatch):
    def no_network(url, path):
        raise ConnectionError("offline")
    monkeypatch.setattr(tasks, "download", no_network)
    monkeypatch.setattr(tasks, "PROSQA_SIZES", {"train": 5, "valid": 2, "test": 2})
    notices = []
    paths = tasks.ensure_dataset("prosqa", str(tmp_path), notice=notices.append)
    assert len(notices) == 1 and "generated" in notices[0]
    assert [len(load_records(paths[s], graph=True)) for s in ("train", "valid", "test")] == [5, 2, 2]
    assert not list(tmp_path.glob("*.tmp"))


def test_gsm8k_download_follows_lfs_pointers_and_converts(tmp_path, monkeypatch):
    fetched = []

    def fake_download(url, path):
        fetched.append(url)
        lfs = url.startswith("https://media.githubusercontent.com/")
        text = "version https://git-lfs.github.com/spec/v1\noid sha256:0\n" if "train" in url and not lfs else \
            "What is 2+2?||<<2+2=4>> #### 4\n"
        with open(path, "w") as f:
            f.write(text)

    monkeypatch.setattr(tasks, "download", fake_download)
    paths = tasks.ensure_dataset("gsm8k", str(tmp_path), notice=lambda m: None)
    assert sum(u.startswith("https://media.githubusercontent.com/") for u in fetched) == 1  # train only
    assert all("e06a32ee5e4cd117171daeb4755d2a97ece62761" in u for u in fetched)
    assert load_records(paths["train"]) == [{"question": "What is 2+2?", "steps": ["<<2+2=4>>"], "answer": "4"}]


def test_malformed_prontoqa_generator_file_is_named(tmp_path):
    (tmp_path / "5hop_0shot_random.json").write_text(json.dumps({"example1": {"test_example": {"question": "q"}}}))
    with pytest.raises(DataError, match="5hop_0shot_random.json: example 'example1': test_example.query"):
        tasks.ensure_dataset("prontoqa", str(tmp_path))


# --- the one-hop shortcut and the endless stream ("Honest ProsQA-mini") ---------------------------------------

def test_the_shortcut_is_another_persons_edge_straight_to_the_negative():
    r = chain_record(2)  # Tom -> c1 -> c2 (target); Bob -> n (negative): "Bob is a n." answers it
    assert data.has_shortcut(r)
    r = dict(r, idx_to_symbol=r["idx_to_symbol"] + ["m"], edges=[[0, 2], [2, 3], [1, 5], [5, 4]])  # Bob -> m -> n
    assert not data.has_shortcut(r)
    r["idx_to_symbol"].append("Rex")  # a third person (no edge points to Rex) with an edge to the negative
    assert data.has_shortcut(dict(r, edges=r["edges"] + [[6, 4]]))
    assert not data.has_shortcut(dict(r, edges=r["edges"] + [[3, 4]]))  # a concept's edge is no shortcut


def test_the_official_split_has_the_shortcut_in_64_of_300_questions(prosqa):
    assert tasks.graph_statistics(prosqa)["shortcut"] == tasks.SHORTCUT_SHARE == 64 / 300


@pytest.mark.parametrize("nodes,path", [((17, 28), (3, 6)), ((6, 9), (2, 3)), ((8, 12), (2, 3)), ((6, 7), (2, 2))])
def test_the_shortcut_share_is_the_official_one_at_every_scale(nodes, path):
    """Left to chance, 82 % of 6-9-node questions had the shortcut; the generator draws the share instead."""
    records = tasks.generate_prosqa({"train": 600}, seed=4, nodes=nodes, path=path)["train"]
    assert abs(sum(map(data.has_shortcut, records)) / len(records) - tasks.SHORTCUT_SHARE) < 0.05


def test_the_stream_never_repeats_a_question_nor_draws_a_held_out_one():
    nodes, path = (6, 7), (2, 2)  # the smallest graphs: repeats are likeliest here
    held_out = tasks.generate_prosqa({"valid": 100, "test": 100}, seed=0, nodes=nodes, path=path)
    seen, questions = set(), []
    for epoch in range(4):
        questions += [r["question"] for r in tasks.prosqa_epoch(0, epoch, 400, nodes, path, seen)]
    assert len(set(questions)) == len(questions) == 1600 == len(seen)
    assert not any(map(tasks.is_held_out, questions))  # training questions: never from the held-out tenth
    assert all(tasks.is_held_out(r["question"]) for split in held_out.values() for r in split)
    other_seed = tasks.generate_prosqa({"valid": 100}, seed=7, nodes=nodes, path=path)["valid"]
    assert not {r["question"] for r in other_seed} & set(questions)  # held out from any seed's training


def test_an_epoch_of_the_stream_is_a_pure_function_of_the_seed_and_the_epoch():
    def epochs(seed, n):
        seen = set()
        return [tasks.prosqa_epoch(seed, e, 50, (6, 9), (2, 3), seen) for e in range(n)]
    assert epochs(0, 3) == epochs(0, 3)
    assert epochs(0, 3)[:2] == epochs(0, 2)  # what a resumed run regenerates
    assert epochs(1, 1) != epochs(0, 1)


def test_show_marks_exactly_the_tokens_that_carry_loss():
    r = {"question": "Tom is a wumpus. Every wumpus is a yumpus. Is Tom a yumpus or zumpus?",
         "steps": ["Tom is a wumpus.", "Every wumpus is a yumpus."], "answer": "Tom is a yumpus."}
    tok = Tokenizer.build("words", data.record_texts(r))
    assert data.show_stages(r, Curriculum("coconut", 1, 1), tok, [0, 1, 2]).splitlines() == [
        "stage 0 (CoT):            ‹question›<|start-latent|><|end-latent|>⟦Tom is a wumpus.\\n Every wumpus is a "
        "yumpus.\\n ### Tom is a yumpus.<|endoftext|>⟧",
        "stage 1:                  ‹question›<|start-latent|><|latent|><|end-latent|>⟦Every wumpus is a yumpus.\\n ### "
        "Tom is a yumpus.<|endoftext|>⟧",
        "stage 2 (past the last):  ‹question›<|start-latent|><|latent|><|end-latent|>⟦### Tom is a yumpus."
        "<|endoftext|>⟧"]

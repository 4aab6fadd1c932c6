"""Tasks: the paper's three datasets as files of records — the pinned releases, their converters, and our generators
(paper §4.1, Appendix A).

ProsQA and GSM8k are downloaded from their pinned sources, ProntoQA converted from the official generator's
output, exactly as the reference's preprocessing does. Offline, ProsQA and ProntoQA come from our generators.
Both generators also feed train.py's endless stream of fresh questions (`prosqa_epoch`, `prontoqa_epoch`) and
hold one question in ten out for validation and test (`is_held_out`); the ProsQA generator draws the one-hop
shortcut with the official share (`SHORTCUT_SHARE`), so a score on its questions measures search.

    python tasks.py prosqa --generate --out data/          # ProsQA-sized splits from our generator
    python tasks.py prosqa --generate --out data/mini --nodes 8 12 --path 2 3 --train 8000
    python tasks.py prosqa --stats data/prosqa_valid.json   # statistics of any file, the shortcut's share too
    python tasks.py prosqa --show --nodes 6 9 --path 2 3    # one question at every stage of the curriculum
"""

import argparse
import hashlib
import math
import os
import random

from data import (ArgumentParser, Curriculum, DataError, Tokenizer, adjacency, bfs, children_of, download,
                  has_shortcut, load_records, nonnegative_int, positive_int, read_json, read_text, record_texts,
                  run_command, show_stages, validate_records, write_json_atomic)

DATASETS = ("prosqa", "prontoqa", "gsm8k")
SPLITS = ("train", "valid", "test")

# Pinned sources (DEVELOPERS.md). GSM8k's train file is stored with Git LFS: the raw host serves a pointer
# for it, and the media host the file.
PROSQA_URL = ("https://raw.githubusercontent.com/facebookresearch/coconut/"
              "27273cb8cca4bb763c041a63b036d0c3b7cbbb48/data/prosqa_{split}.json")
GSM8K_PATH = "da03/Internalize_CoT_Step_by_Step/e06a32ee5e4cd117171daeb4755d2a97ece62761/data/gsm8k/{split}.txt"
GSM8K_URL = "https://raw.githubusercontent.com/" + GSM8K_PATH
GSM8K_LFS_URL = "https://media.githubusercontent.com/media/" + GSM8K_PATH
LFS_POINTER = "version https://git-lfs"
PROSQA_SIZES = {"train": 17886, "valid": 300, "test": 500}
PRONTOQA_SIZES = {"train": 9000, "valid": 200, "test": 800}


# ----------------------------------------------------------------------------------------------------------
# Converters from the original formats (exactly as the reference's preprocessing scripts).

def prontoqa_from_generator(raw, source="5hop_0shot_random.json"):
    """`5hop_0shot_random.json` -> records: question + " " + query, chain-of-thought joined two by two."""
    if not isinstance(raw, dict):
        raise DataError(f"{source}: expected an object of examples, got {type(raw).__name__}")
    records = []
    for key, v in raw.items():
        ex = v.get("test_example") if isinstance(v, dict) else None
        fields = {"question": str, "query": str, "chain_of_thought": list, "answer": str}
        bad = [f for f, t in fields.items() if not isinstance(ex, dict) or not isinstance(ex.get(f), t)]
        if bad:
            raise DataError(f"{source}: example {key!r}: test_example.{bad[0]} is missing or of the wrong type")
        cot = ex["chain_of_thought"]
        records.append({"question": ex["question"] + " " + ex["query"],
                        "steps": [" ".join(cot[i:i + 2]) for i in range(0, len(cot), 2)],
                        "answer": ex["answer"]})
    return records


def prontoqa_file(path):
    """The records of a file written by ProntoQA's generator (e.g. 5hop_0shot_random.json), checked."""
    records = prontoqa_from_generator(read_json(path), path)
    validate_records(records, path)
    return records


def split_prontoqa(records):
    """The reference's split: 9,000 train, 200 valid, the rest test."""
    return {"train": records[:9000], "valid": records[9000:9200], "test": records[9200:]}


def gsm8k_from_icot(lines, source):
    """iCoT lines `question||<<a>> <<b>> #### answer` -> records with steps split on spaces."""
    records = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if "||" not in line or "####" not in line:
            raise DataError(f"{source}: line {n}: expected 'question||steps #### answer'")
        question, rest = line.split("||", 1)
        cot, answer = rest.rsplit("####", 1)
        records.append({"question": question, "steps": cot.strip().split(" ") if cot.strip() else [],
                        "answer": answer.strip()})
    return records


# ----------------------------------------------------------------------------------------------------------
# ProsQA generator (paper Appendix A). The reference repository ships only the data, not its generator.

PERSON_NAMES = ["Alex", "Bob", "Carol", "Davis", "Eva", "Fae", "Gabriel", "Jack", "Max", "Oliver", "Polly", "Rex",
                "Sally", "Sam", "Stella", "Tom", "Wren"]
CONCEPT_NAMES = ["bompus", "boompus", "brimpus", "chorpus", "dumpus", "felpus", "fompus", "gerpus", "gorpus",
                 "grimpus", "gwompus", "hilpus", "impus", "jelpus", "jompus", "kerpus", "lempus", "lorpus", "numpus",
                 "quimpus", "rempus", "rompus", "rorpus", "scrompus", "shumpus", "sterpus", "storpus", "terpus",
                 "timpus", "tumpus", "vumpus", "worpus", "wumpus", "yerpus", "yimpus", "yumpus", "zhorpus", "zumpus"]


def poisson(rng, lam):
    """Knuth's method: plenty for lam = 1.5."""
    k, p, limit = 0, rng.random(), math.exp(-lam)
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def prosqa_graph(rng, n_nodes, lam=1.5, p_side=0.35, p_person=0.025):
    """One DAG of Appendix A. Returns (parents per node, label bits per node: 1 = from node 0, 2 = from node 1).

    Appendix A draws the parent count from Poisson(1.5) but does not say what a draw of 0 does. The official
    splits have 2.5 parentless nodes per graph and a mean in-degree of 1.79 elsewhere, which a redrawn 0
    (zero-truncated Poisson) plus an occasional new person (p_person) reproduces; a kept 0 does not (4.6
    people, 30 edges instead of 36).
    """
    parents, label, depth = [[], []], [1, 2], [0, 0]
    for i in range(2, n_nodes):
        n_parents = 0
        while n_parents == 0 and rng.random() >= p_person:
            n_parents = poisson(rng, lam)
        r = rng.random()
        if r < p_side:  # keep the new node off node 1's side
            cands = [j for j in range(i) if not label[j] & 2]
        elif r < 2 * p_side:  # keep it off node 0's side
            cands = [j for j in range(i) if not label[j] & 1]
        else:
            cands = list(range(i))
        chosen = []
        for _ in range(min(n_parents, len(cands))):  # weighted draw without replacement
            pool = [j for j in cands if j not in chosen]
            chosen.append(rng.choices(pool, weights=[1.5 * depth[j] + 1 for j in pool])[0])
        parents.append(chosen)
        label.append(0)
        for j in chosen:
            label[i] |= label[j]
        depth.append(1 + max((depth[j] for j in chosen), default=-1))
    return parents, label


MAX_GRAPH_DRAWS = 10_000  # a 6-step question takes ~70 draws; an impossible --nodes/--path must not loop forever


def prosqa_question_graph(rng, nodes, path):
    """Draw graphs until one has a target at shortest distance within `path`. Returns (parents per node, the
    entity, its distances, the target, the negative).

    Appendix A leaves open which person the question asks about and which leaves become the options; both are
    read off the official splits: the target is the farthest leaf only the entity reaches, the negative a concept
    leaf only the other person reaches, and the entity is the person with the farther such target (ties at
    random). Whether the negative is a child of another person (has_shortcut, a one-hop giveaway) is drawn first,
    with the official share SHORTCUT_SHARE, so that a score measures search at every graph size. What each
    choice changes, measured: docs/lab.md, "The generator's choices".
    """
    shortcut = rng.random() < SHORTCUT_SHARE
    for _ in range(MAX_GRAPH_DRAWS):
        n = rng.randint(*nodes)
        parents, label = prosqa_graph(rng, n)
        children = adjacency(n, [(p, c) for c in range(n) for p in parents[c]])
        leaves = [i for i in range(n) if not children[i]]
        people = [i for i in range(n) if not parents[i]]  # parentless nodes are people, the others concepts
        if len(people) > len(PERSON_NAMES) or n - len(people) > len(CONCEPT_NAMES):
            continue
        choices = []  # (distance of the farthest target, entity, its distances, targets, negatives)
        for entity in (0, 1):
            dist, _ = bfs(children, entity)
            targets = [i for i in leaves if label[i] == 1 << entity and parents[i]]
            negatives = [i for i in leaves if label[i] == 1 << (1 - entity) and parents[i]]
            if targets and negatives:
                choices.append((max(dist[i] for i in targets), entity, dist, targets, negatives))
        if not choices:
            continue
        far = max(c[0] for c in choices)
        if not path[0] <= far <= path[1]:
            continue
        # the entity as the official rule has it, then a negative of the kind drawn above
        choices = [(c[:4], [i for i in c[4] if any(p != c[1] and not parents[p] for p in parents[i]) == shortcut])
                   for c in choices if c[0] == far]
        choices = [(c, negatives) for c, negatives in choices if negatives]
        if choices:
            break
    else:
        raise DataError(f"no graph of {nodes[0]}-{nodes[1]} nodes had a target {path[0]}-{path[1]} steps away in "
                        f"{MAX_GRAPH_DRAWS:,} draws: widen --nodes or --path")
    (_, root, dist, targets), negatives = rng.choice(choices)
    return parents, root, dist, rng.choice([i for i in targets if dist[i] == far]), rng.choice(negatives)


def prosqa_sample(rng, nodes=(17, 28), path=(3, 6)):
    """A ProsQA record: a question graph (prosqa_question_graph), its nodes named and its edges written out."""
    parents, root, dist, target, neg = prosqa_question_graph(rng, nodes, path)
    n = len(parents)
    people = [i for i in range(n) if not parents[i]]
    # names are unique within a graph
    symbol = dict(zip(people, rng.sample(PERSON_NAMES, len(people))))
    symbol.update(zip([i for i in range(n) if parents[i]], rng.sample(CONCEPT_NAMES, n - len(people))))
    idx_to_symbol = [symbol[i] for i in range(n)]
    edges = [[p, c] for c in range(n) for p in parents[c]]
    rng.shuffle(edges)

    def statement(p, c):
        every = "Every " if parents[p] else ""
        return f"{every}{symbol[p]} is a {symbol[c]}."

    # One shortest path, ties broken at random: walk back from the target through nodes one step closer.
    route = [target]
    while route[-1] != root:
        route.append(rng.choice([p for p in parents[route[-1]] if dist.get(p) == dist[route[-1]] - 1]))
    route.reverse()
    steps = [statement(a, b) for a, b in zip(route, route[1:])]
    options = [symbol[target], symbol[neg]]
    rng.shuffle(options)
    question = " ".join(statement(p, c) for p, c in edges) + f" Is {symbol[root]} a {options[0]} or {options[1]}?"
    return {"question": question, "steps": steps, "answer": f"{symbol[root]} is a {symbol[target]}.",
            "idx_to_symbol": idx_to_symbol, "edges": edges, "root": root, "target": target, "neg_target": neg}


# Shortest-path lengths of the official validation split: 124, 133, 36 and 7 of its 300 records.
OFFICIAL_PATH_SHARES = {3: 124 / 300, 4: 133 / 300, 5: 36 / 300, 6: 7 / 300}
# Questions of the official validation split that another person's edge to the negative answers in one hop.
SHORTCUT_SHARE = 64 / 300
HELD_OUT_SPLITS = ("valid", "test")
HELD_OUT_EVERY = 10  # one question in 10 (by the hash of its text) may be held out, the other 9 trained on


def question_key(question):
    """A 64-bit hash of a question's text: its identity in the stream's set of questions seen."""
    return int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest(), "little")


def is_held_out(question):
    """Validation and test questions come only from this tenth of the question space and training questions
    never do, whatever the seeds: held-out questions are disjoint from every training question by construction."""
    return question_key(question) % HELD_OUT_EVERY == 0


def draw_records(draw, size, held_out, seen):
    """`size` new records of `draw()` from one side of the held-out partition; each question's key is added to
    `seen`, and a question already in `seen` is drawn again."""
    out = []
    while len(out) < size:
        r = draw()
        key = question_key(r["question"])
        if is_held_out(r["question"]) == held_out and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def prosqa_records(rng, size, nodes, path, held_out, seen):
    """draw_records of ProsQA questions. Within the official 3-6-step range each record's length is first drawn
    from OFFICIAL_PATH_SHARES (see generate_prosqa)."""
    shares = OFFICIAL_PATH_SHARES if tuple(path) == (3, 6) else None

    def draw():
        if shares:
            length = rng.choices(list(shares), weights=list(shares.values()))[0]
            return prosqa_sample(rng, nodes, (length, length))
        return prosqa_sample(rng, nodes, path)
    return draw_records(draw, size, held_out, seen)


def generate_prosqa(sizes, seed=0, nodes=(17, 28), path=(3, 6)):
    """Splits of ProsQA-style records; deterministic for a seed; no question appears in two splits, and
    validation and test questions are held out (is_held_out) from every training set of any seed. In the
    official 3-6-step range each record's length is first drawn from the official split's shares
    (OFFICIAL_PATH_SHARES), which the rules alone do not reproduce (docs/lab.md); other ranges keep the
    lengths the rules give."""
    rng, seen = random.Random(seed), set()
    return {split: prosqa_records(rng, size, nodes, path, split in HELD_OUT_SPLITS, seen)
            for split, size in sizes.items()}


def prosqa_epoch(seed, epoch, size, nodes, path, seen):
    """Epoch `epoch`'s training questions of the endless stream: `size` records never held out and never in
    `seen` (the keys of every earlier epoch's questions; this epoch's are added). A pure function of the seed
    and the epoch once `seen` holds epochs 0..epoch-1, which is what makes --resume exact."""
    return prosqa_records(random.Random(f"prosqa-stream-{seed}-{epoch}"), size, nodes, path, False, seen)


def ensure_held_out(data_dir, dataset, seed, nodes, path, sizes):
    """{split: path} of a generated run's validation and test questions in data_dir, generated if missing: a pure
    function of the seed (and the graph sizes and path lengths), so a run folder (or a shipped model) finds the same
    questions anywhere."""
    paths = {s: os.path.join(data_dir, f"{dataset}_{s}.json") for s in sizes}
    if not all(os.path.exists(p) for p in paths.values()):
        splits = (generate_prontoqa(sizes, seed, tuple(path)) if dataset == "prontoqa" else
                  generate_prosqa(sizes, seed, tuple(nodes), tuple(path)))
        for s, records in splits.items():
            write_json_atomic(records, paths[s])
    return paths


def prosqa_vocabulary_texts():
    """Texts that use every word the ProsQA generator can write: a compact vocabulary built from them holds every
    question an endless stream will ever draw."""
    people, concepts = PERSON_NAMES, CONCEPT_NAMES
    question = " ".join([f"{p} is a {c}." for p, c in zip(people, concepts)] +
                        [f"Every {c} is a {c}." for c in concepts] +
                        [f"Is {people[0]} a {concepts[0]} or {concepts[1]}?"])
    return record_texts({"question": question, "steps": [f"Every {concepts[0]} is a {concepts[1]}."],
                         "answer": f"{people[0]} is a {concepts[0]}."})


def graph_statistics(records, source="records"):
    """Nodes, edges, shortest-path length (root -> target) and number of shortest paths: the mean, min and max
    of each (keys `nodes`, `nodes_min`, `nodes_max`, ...), `path_shares`: {length: share of records}, and
    `shortcut`: the share of questions has_shortcut answers in one hop."""
    if not records:
        raise DataError(f"{source}: no records")
    columns = {"nodes": [], "edges": [], "path": [], "n_paths": []}
    for i, r in enumerate(records):
        dist, count = bfs(children_of(r), r["root"])
        if r["target"] not in dist:
            raise DataError(f"{source}: record {i}: the target is not reachable from the root")
        columns["nodes"].append(len(r["idx_to_symbol"]))
        columns["edges"].append(len(r["edges"]))
        columns["path"].append(dist[r["target"]])
        columns["n_paths"].append(count[r["target"]])
    stats = {"records": len(records)}
    for k, v in columns.items():
        stats |= {k: sum(v) / len(v), f"{k}_min": min(v), f"{k}_max": max(v)}
    lengths = sorted(set(columns["path"]))
    stats["path_shares"] = {d: columns["path"].count(d) / len(records) for d in lengths}
    stats["shortcut"] = sum(map(has_shortcut, records)) / len(records)
    return stats


def statistics_table(named_stats):
    """A Markdown table of graph_statistics, one row per (name, stats): the `--stats` output."""
    lengths = sorted({d for _, s in named_stats for d in s["path_shares"]})
    head = ["", "records", "nodes", "edges", "shortest path", "shortest paths"] + [f"{d} steps" for d in lengths] + [
        "one-hop shortcut"]
    rows = [head, ["---"] * len(head)]
    for name, s in named_stats:
        rows.append([name, str(s["records"])] + [
            f"{s[k]:.2f} ({s[k + '_min']}-{s[k + '_max']})" for k in ("nodes", "edges", "path", "n_paths")] + [
            f"{100 * s['path_shares'].get(d, 0):.1f} %" for d in lengths] + [f"{100 * s['shortcut']:.1f} %"])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


# ----------------------------------------------------------------------------------------------------------
# ProntoQA generator: 5-hop fictional ontologies in the official generator's surface form, for offline runs.

# The official sample's every concept, property and name: a model trained on ours reads the official questions.
PRONTOQA_CONCEPTS = ["brimpus", "dumpus", "gorpus", "grimpus", "impus", "jompus", "lempus", "lorpus", "numpus",
                     "rompus", "shumpus", "sterpus", "tumpus", "vumpus", "wumpus", "yumpus", "zumpus"]
PRONTOQA_PROPERTIES = ["sweet", "sour", "feisty", "angry", "slow", "fast", "temperate", "large", "small",
                       "discordant", "opaque", "fruity", "overcast", "wooden", "dull", "bright", "windy", "liquid",
                       "hot", "cold", "melodic", "earthy", "happy", "mean", "moderate", "orange", "spicy",
                       "shy", "kind", "red", "blue", "floral", "metallic", "nervous", "transparent", "aggressive",
                       "amenable", "bitter", "brown", "loud", "luminous", "muffled", "rainy", "snowy", "sunny"]
PRONTOQA_NAMES = ["Alex", "Fae", "Max", "Polly", "Rex", "Sally", "Sam", "Stella", "Wren"]


def prontoqa_sample(rng, hops=5):
    """Chain entity -> c0 -> ... -> c_{hops-1} -> property, with distractors: at 5 hops 25 statements like the
    official; fewer hops keep its shape (a branch more than hops)."""
    n_branches = hops + 1
    concepts = rng.sample(PRONTOQA_CONCEPTS, hops + n_branches + 3)
    chain, branches = concepts[:hops], concepts[hops:hops + n_branches]
    decoy, decoy_parent, opposite = concepts[hops + n_branches:]
    props = rng.sample(PRONTOQA_PROPERTIES, hops + n_branches + 1)
    entity = rng.choice(PRONTOQA_NAMES)

    def an(x):  # the official generator writes "an impus"
        return ("an " if x[0] in "aeiou" else "a ") + x

    def isa(a, b):
        return rng.choice([f"Every {a} is {an(b)}.", f"Each {a} is {an(b)}.", f"{a.capitalize()}es are {b}es."])

    def has(a, p, neg):
        n = "not " if neg else ""
        return rng.choice([f"Every {a} is {n}{p}.", f"Each {a} is {n}{p}.", f"{a.capitalize()}es are {n}{p}."])

    final_prop, final_neg = props[hops - 1], rng.random() < 0.5
    rules = {}
    for i in range(hops - 1):
        rules[(chain[i], chain[i + 1])] = isa(chain[i], chain[i + 1])
    for i in range(hops - 1):
        rules[(chain[i], props[i])] = has(chain[i], props[i], rng.random() < 0.5)
    rules[(chain[-1], final_prop)] = has(chain[-1], final_prop, final_neg)
    for j, b in enumerate(branches):
        rules[(chain[j % hops], b)] = isa(chain[j % hops], b)
        if j < n_branches - 1:
            rules[(b, props[hops + j])] = has(b, props[hops + j], rng.random() < 0.5)
    rules[(decoy, decoy_parent)] = isa(decoy, decoy_parent)
    rules[(decoy, props[-1])] = has(decoy, props[-1], rng.random() < 0.5)
    rules[(opposite, final_prop)] = has(opposite, final_prop, not final_neg)
    statements = list(rules.values())
    rng.shuffle(statements)
    facts = [f"{entity} is {an(chain[0])}.", f"{entity} is {an(decoy)}."]
    rng.shuffle(facts)
    cot = [f"{entity} is {an(chain[0])}."]
    for i in range(hops - 1):
        cot += [rules[(chain[i], chain[i + 1])], f"{entity} is {an(chain[i + 1])}."]
    cot += [rules[(chain[-1], final_prop)], f"{entity} is {'not ' if final_neg else ''}{final_prop}."]
    query_neg = rng.random() < 0.5
    return {"test_example": {
        "question": " ".join(statements + facts),
        "query": f"True or false: {entity} is {'not ' if query_neg else ''}{final_prop}.",
        "chain_of_thought": cot,
        "answer": "True" if query_neg == final_neg else "False"}}


def generate_prontoqa_raw(n, seed=0):
    """`n` questions in the official generator's own format (its 5hop_0shot_random.json)."""
    rng = random.Random(seed)
    return {f"example{i + 1}": prontoqa_sample(rng) for i in range(n)}


def prontoqa_record(rng, hops=(5, 5)):
    """One record of `hops` (min, max) hops; the official 5 draws no number, so its questions stay the same."""
    n = hops[0] if hops[0] == hops[1] else rng.randint(*hops)
    return prontoqa_from_generator({"example": prontoqa_sample(rng, n)})[0]


def generate_prontoqa(sizes, seed=0, hops=(5, 5)):
    """Splits of our ProntoQA records, held out as ProsQA's are: validation and test questions only from the
    held-out tenth (is_held_out), never one question twice."""
    rng, seen = random.Random(seed), set()
    return {split: draw_records(lambda: prontoqa_record(rng, hops), size, split in HELD_OUT_SPLITS, seen)
            for split, size in sizes.items()}


def prontoqa_epoch(seed, epoch, size, seen, hops=(5, 5)):
    """ProntoQA's endless stream, as prosqa_epoch draws ProsQA's."""
    rng = random.Random(f"prontoqa-stream-{seed}-{epoch}")
    return draw_records(lambda: prontoqa_record(rng, hops), size, False, seen)


def prontoqa_vocabulary_texts():
    """Texts that use every word the ProntoQA generator can write (as prosqa_vocabulary_texts)."""
    c, names = PRONTOQA_CONCEPTS, PRONTOQA_NAMES
    question = " ".join([f"Every {x} is a {x}. Each {x} is an {x}. {x.capitalize()}es are {x}es." for x in c] +
                        [f"Every {c[0]} is {p}. Every {c[0]} is not {p}." for p in PRONTOQA_PROPERTIES] +
                        [f"{n} is a {c[0]}." for n in names] + ["True or false: Max is not sweet."])
    return record_texts({"question": question, "steps": [], "answer": "True"}) + ["### False"]


# ----------------------------------------------------------------------------------------------------------
# Finding a dataset's splits: local files, else the pinned download, else (where one exists) our generator.

def ensure_dataset(name, data_dir="data", notice=print):
    """Make sure `data_dir/<name>_{train,valid,test}.json` exist; returns {split: path}."""
    if name not in DATASETS:
        raise DataError(f"--dataset {name!r}: expected one of {', '.join(DATASETS)}")
    paths = {s: os.path.join(data_dir, f"{name}_{s}.json") for s in SPLITS}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    os.makedirs(data_dir, exist_ok=True)
    if name == "prosqa":
        try:
            for s, p in paths.items():
                if not os.path.exists(p):
                    download(PROSQA_URL.format(split=s), p)
        except ConnectionError:
            notice(f"ProsQA: no network, so {data_dir}/prosqa_*.json are generated by tasks.py's generator "
                   "(paper Appendix A), not the official release")
            for s, records in generate_prosqa(PROSQA_SIZES).items():
                write_json_atomic(records, paths[s])
    elif name == "prontoqa":
        raw_path = os.path.join(data_dir, "5hop_0shot_random.json")
        if os.path.exists(raw_path):
            splits = split_prontoqa(prontoqa_file(raw_path))
        else:
            notice(f"ProntoQA: {raw_path} not found, so the splits come from tasks.py's 5-hop generator")
            splits = generate_prontoqa(PRONTOQA_SIZES)
        for s, records in splits.items():
            write_json_atomic(records, paths[s])
    else:
        for s, p in paths.items():
            write_json_atomic(gsm8k_records(data_dir, s), p)
    return paths


def gsm8k_records(data_dir, split):
    """The records of iCoT's GSM8k split `split` (data_dir/gsm8k_<split>.txt, downloaded once)."""
    txt = os.path.join(data_dir, f"gsm8k_{split}.txt")
    try:
        if not os.path.exists(txt):
            download(GSM8K_URL.format(split=split), txt)
            with open(txt, encoding="utf-8") as f:
                pointer = f.read(len(LFS_POINTER)) == LFS_POINTER
            if pointer:
                download(GSM8K_LFS_URL.format(split=split), txt)
    except ConnectionError as e:
        raise DataError(f"GSM8k: {txt} is missing and could not be downloaded ({e}); there is no "
                        "generator for GSM8k") from None
    lines = read_text(txt).splitlines(keepends=True)
    if lines and lines[0].startswith(LFS_POINTER):
        raise DataError(f"{txt}: a Git LFS pointer, not the data; fetch the file itself")
    return gsm8k_from_icot(lines, txt)


# ----------------------------------------------------------------------------------------------------------

def check_generator_flags(nodes, path):
    """The graph sizes and path lengths a generator can meet: a target d steps away needs the entity, d
    concepts, the other person, and a negative concept with a concept between it and that person (a question
    without the one-hop shortcut)."""
    if not 1 <= path[0] <= path[1]:
        raise DataError(f"--path {path[0]} {path[1]}: MIN must be at least 1 and at most MAX")
    if not path[0] + 4 <= nodes[0] <= nodes[1] <= len(CONCEPT_NAMES) + 2:
        raise DataError(f"--nodes {nodes[0]} {nodes[1]}: MIN must be at most MAX, at least {path[0] + 4} (a "
                        f"{path[0]}-step path, two people, a negative and a concept above it) and MAX at most "
                        f"{len(CONCEPT_NAMES) + 2} ({len(CONCEPT_NAMES)} concept names)")


def show(args):
    """--show: one generated question and its training sequence at every stage, what carries loss marked."""
    if args.dataset != "prosqa":
        raise DataError("--show: only for prosqa")
    check_generator_flags(args.nodes, args.path)
    record = generate_prosqa({"valid": 1}, args.seed, tuple(args.nodes), tuple(args.path))["valid"][0]
    tok = Tokenizer.build("words", record_texts(record))  # a token per word: the sequence reads as text
    print(f"question: {record['question']}\nsteps: {' '.join(record['steps'])}\nanswer: {record['answer']}\n")
    print(show_stages(record, Curriculum("coconut", args.c, args.max_latent_stage), tok,
                      range(args.max_latent_stage + 2)))


def generate(args):
    """--generate: the splits from our generator, written into --out."""
    if args.dataset == "prosqa":
        check_generator_flags(args.nodes, args.path)
        sizes = {s: getattr(args, s) if getattr(args, s) is not None else PROSQA_SIZES[s] for s in SPLITS}
        splits = generate_prosqa(sizes, args.seed, tuple(args.nodes), tuple(args.path))
        paths = {s: os.path.join(args.out, f"prosqa_{s}.json") for s in SPLITS}
        for s, records in splits.items():
            write_json_atomic(records, paths[s])
        print(statistics_table([(paths[s], graph_statistics(records)) for s, records in splits.items()]))
    elif args.dataset == "prontoqa":
        sizes = {s: getattr(args, s) if getattr(args, s) is not None else PRONTOQA_SIZES[s] for s in SPLITS}
        for s, records in generate_prontoqa(sizes, args.seed).items():
            write_json_atomic(records, os.path.join(args.out, f"prontoqa_{s}.json"))
        print(f"wrote prontoqa splits to {args.out}")
    else:
        raise DataError("--generate: gsm8k has no generator; run without --generate to download it")


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--generate", action="store_true", help="write splits from our generator")
    p.add_argument("--show", action="store_true", help="prosqa: one generated question and its training sequence "
                   "at every stage of the curriculum (--c, --max_latent_stage), the loss-carrying part marked")
    p.add_argument("--c", type=positive_int, default=1, help="--show: continuous thoughts per step")
    p.add_argument("--max_latent_stage", type=nonnegative_int, default=2, help="--show: the last latent stage")
    p.add_argument("--stats", nargs="+", metavar="FILE", help="prosqa: graph statistics of files in the reference "
                   "format (compare a generated set with the official one)")
    p.add_argument("--out", default="data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nodes", type=int, nargs=2, default=(17, 28), metavar=("MIN", "MAX"),
                   help="ProsQA graph size range (official splits: 22.8 nodes on average)")
    p.add_argument("--path", type=int, nargs=2, default=(3, 6), metavar=("MIN", "MAX"),
                   help="ProsQA shortest path length range (official: 3-6 steps)")
    for s in SPLITS:
        p.add_argument(f"--{s}", type=int, default=None, help=f"records in {s} (default: the official count)")
    args = p.parse_args(argv)
    for s in SPLITS:  # a DataError, as every bad input of the generators (callers catch it as one)
        if getattr(args, s) is not None and getattr(args, s) < 1:
            raise DataError(f"--{s} {getattr(args, s)}: a split holds at least 1 record")
    if os.path.isfile(args.out):
        raise DataError(f"--out {args.out}: is a file, not a folder")
    if args.show:
        show(args)
    elif args.stats:
        if args.dataset != "prosqa" or args.generate:
            raise DataError("--stats: only for prosqa, and not with --generate (which prints them itself)")
        print(statistics_table([(path, graph_statistics(load_records(path, graph=True), path))
                                for path in args.stats]))
    elif args.generate:
        generate(args)
    else:
        paths = ensure_dataset(args.dataset, args.out)
        print("\n".join(paths.values()))


if __name__ == "__main__":
    run_command(main)

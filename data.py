"""Data: the three datasets, a ProsQA generator, and the curriculum's token sequences (paper §3-4, Appendix A).

Everything between a JSON file and a batch of tensors. The sequences follow the reference implementation
token for token: `question + "\\n"`, each `step + "\\n"`, `"### " + answer`, eos. At stage k of the
curriculum the first k steps are replaced by `<bot>`, k*c `<|latent|>`, `<eot>` (§3 "Training Procedure").

    python data.py prosqa --generate --out data/          # ProsQA-sized splits from our generator
    python data.py prosqa --generate --out data/mini --nodes 8 12 --path 2 3 --train 8000
"""

import argparse
import hashlib
import json
import math
import os
import random
import re
import sys
import urllib.request
from collections import deque, namedtuple

import torch

METHODS = ("coconut", "cot", "no-cot", "pause", "icot", "no-thought", "pause-as-thought", "no-curriculum")
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


class DataError(ValueError):
    """A file or record that cannot be used; the message names the file, record and field."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, `error: ...`, like every other bad input (no usage dump)."""

    def error(self, message):
        raise SystemExit(f"error: {message}")


# ----------------------------------------------------------------------------------------------------------
# Vocabularies: text <-> the rows of the model's embedding, and where the three Coconut tokens sit.

Special = namedtuple("Special", ["eos", "start", "end", "latent"])
# GPT-2's 50,257 rows, then <|start-latent|>, <|end-latent|>, <|latent|> (the reference's ids)
GPT2_SPECIAL = Special(eos=50256, start=50257, end=50258, latent=50259)
EOS_ID, START_LATENT_ID, END_LATENT_ID, LATENT_ID = GPT2_SPECIAL
GPT2_INIT_ID = 16791  # "<<": the reference starts the three new rows as copies of it "to stabilise training"
SPECIAL_NAMES = ("<|endoftext|>", "<|start-latent|>", "<|end-latent|>", "<|latent|>")
VOCABS = ("gpt2", "bpe", "words")
# GPT-2's pre-tokenizer: the "words" its BPE never merges across (a leading space belongs to the word)
WORD_PATTERN = re.compile(r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


def split_words(text):
    """Words without their leading space: " Tom" (inside a question) and "Tom" (starting a step) are one word."""
    return [u[1:] if len(u) > 1 and u[0] == " " and not u[1].isspace() else u for u in WORD_PATTERN.findall(text)]


def join_words(words):
    """The inverse of split_words for text spaced as ProsQA's and ProntoQA's: one space before each word that
    starts with a letter or digit, except at the start of a line."""
    out = []
    for i, w in enumerate(words):
        if i and w[:1].isalnum() and not out[-1][-1:].isspace():
            out.append(" ")
        out.append(w)
    return "".join(out)


def gpt2_encoding():
    import tiktoken
    repo_cache = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "shared", "tiktoken")
    if "TIKTOKEN_CACHE_DIR" not in os.environ and os.path.isdir(repo_cache):
        os.environ["TIKTOKEN_CACHE_DIR"] = repo_cache
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # tiktoken fetches the BPE file on first use
        raise RuntimeError("could not load GPT-2's BPE (tiktoken 'gpt2'); offline, point TIKTOKEN_CACHE_DIR "
                           f"at a folder holding tiktoken's cached files ({e})") from e


class Tokenizer:
    """Text -> row ids of the model's embedding, and back. One of three vocabularies (`kind`):

    - "gpt2": GPT-2's BPE ids as released, then the three Coconut tokens: 50,260 rows (a pretrained GPT-2).
    - "bpe": the same BPE pieces, but a row only for those in `pieces` (the GPT-2 ids of the dataset). A
      128-wide model from scratch spends most of its compute on a 50,257-row output head; ProsQA uses ~100.
    - "words": one row per word of GPT-2's pre-tokenizer, its leading space dropped ("Tom", "shumpus", ".",
      "\n"): every name is one token, the same inside a question and at the start of a step, and a ProsQA-mini
      question 53 tokens instead of 81. Spaces are put back by rule (join_words); a text spaced otherwise
      (GSM8k's "<<4-2=2>>") cannot be represented, which building the vocabulary reports.
    A compact vocabulary lists its pieces, then eos and the three Coconut tokens, in GPT-2's order. The
    model, the thought loop and the curriculum only see row ids; `state()` goes into checkpoints.
    """

    def __init__(self, kind="gpt2", pieces=None):
        if kind not in VOCABS:
            raise DataError(f"vocabulary {kind!r}: expected one of {', '.join(VOCABS)}")
        self.kind = kind
        self.enc = gpt2_encoding() if kind != "words" else None
        if kind == "gpt2":
            self.pieces, self.special = None, GPT2_SPECIAL
            self.vocab_size = GPT2_SPECIAL.latent + 1
            return
        self.pieces = list(pieces)
        n = len(self.pieces)
        self.special = Special(n, n + 1, n + 2, n + 3)
        self.vocab_size = n + 4
        self.row_of = {p: i for i, p in enumerate(self.pieces)}

    @classmethod
    def build(cls, kind, texts):
        """The vocabulary of `texts`: GPT-2's as it is, or a row for each BPE id / word they use."""
        if kind == "gpt2":
            return cls("gpt2")
        if kind == "bpe":
            enc = gpt2_encoding()
            return cls("bpe", sorted({i for t in texts for i in enc.encode_ordinary(t)}))
        split = [split_words(t) for t in texts]
        for t, words in zip(texts, split):
            if join_words(words) != t:
                raise DataError(f"--vocab words: {t[:60]!r} is not spaced as words are rejoined (one space "
                                "before each word, none before punctuation); use --vocab bpe")
        return cls("words", sorted({w for words in split for w in words}))

    @classmethod
    def from_state(cls, state):
        return cls(state["kind"], state.get("pieces"))

    def state(self):
        return {"kind": self.kind, "pieces": self.pieces}

    @property
    def eos_id(self):
        return self.special.eos

    @property
    def init_row(self):
        """The row the new Coconut rows copy: "<<" where the vocabulary has it, else eos."""
        if self.kind == "gpt2":
            return GPT2_INIT_ID
        return self.row_of.get(GPT2_INIT_ID if self.kind == "bpe" else "<<", self.special.eos)

    def encode(self, text):
        if self.kind == "gpt2":
            return self.enc.encode_ordinary(text)
        units = self.enc.encode_ordinary(text) if self.kind == "bpe" else split_words(text)
        try:
            return [self.row_of[u] for u in units]
        except KeyError as e:
            unit = self.enc.decode([e.args[0]]) if self.kind == "bpe" else e.args[0]
            raise DataError(f"{unit!r} has no row in this {self.kind} vocabulary (built from the dataset the model "
                            f"was trained on): in {text[:60]!r}") from None

    def decode(self, ids, skip_special=False):
        """Readable text; Coconut's tokens and eos shown by name (or dropped with skip_special)."""
        out, run = [], []
        for i in ids:
            i = int(i)
            if i in self.special:
                out.append(self._decode_run(run))
                run = []
                if not skip_special:
                    out.append(SPECIAL_NAMES[self.special.index(i)])
            else:
                run.append(i)
        out.append(self._decode_run(run))
        return "".join(out)

    def _decode_run(self, rows):
        if self.kind == "gpt2":
            return self.enc.decode(rows)
        if self.kind == "bpe":
            return self.enc.decode([self.pieces[r] for r in rows])
        return join_words([self.pieces[r] for r in rows])


# ----------------------------------------------------------------------------------------------------------
# Records: the reference JSON format, validated in full before anything is used.

GRAPH_FIELDS = ("idx_to_symbol", "edges", "root", "target", "neg_target")


def validate_records(records, source, graph=False):
    if not isinstance(records, list):
        raise DataError(f"{source}: expected a JSON list of records, got {type(records).__name__}")
    for i, r in enumerate(records):
        where = f"{source}: record {i}"
        if not isinstance(r, dict):
            raise DataError(f"{where}: expected an object, got {type(r).__name__}")
        for field in ("question", "answer"):
            if not isinstance(r.get(field), str):
                raise DataError(f"{where}: field '{field}' must be a string" + ("" if field in r else " (missing)"))
        steps = r.get("steps")
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise DataError(f"{where}: field 'steps' must be a list of strings" + ("" if "steps" in r else " (missing)"))
        if graph:
            validate_graph(r, where)
    return records


def validate_graph(r, where):
    names = r.get("idx_to_symbol")
    if not isinstance(names, list) or not all(isinstance(s, str) for s in names):
        raise DataError(f"{where}: field 'idx_to_symbol' must be a list of strings")
    n = len(names)
    edges = r.get("edges")
    if not isinstance(edges, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(x, int) and 0 <= x < n for x in e) for e in edges):
        raise DataError(f"{where}: field 'edges' must be a list of [parent, child] node indices below {n}")
    for field in ("root", "target", "neg_target"):
        if not isinstance(r.get(field), int) or not 0 <= r[field] < n:
            raise DataError(f"{where}: field '{field}' must be a node index below {n}")


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None


def load_records(path, graph=False):
    """A data file's records, every one checked: a file that is missing, not UTF-8, not JSON, not a list, empty,
    or holds a record with a missing or mistyped field is a DataError naming the file (and the record)."""
    try:
        records = json.loads(read_text(path))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not a data file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    validate_records(records, path, graph)
    if not records:
        raise DataError(f"{path}: an empty list, no records")
    return records


def write_atomic(path, write):
    """write(f) into a temporary file beside `path`, then rename it over `path`: a kill at any moment leaves the
    old file or the new one, never part of one. The data is fsynced before the rename and the folder after it,
    so a power cut cannot keep the rename without the data."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # per process: parallel runs may write the same file
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(obj, path, indent=None):
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=indent).encode("utf-8")))


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


def bfs(children, source):
    """Distances from source and the number of shortest paths to each reached node."""
    dist, count, queue = {source: 0}, {source: 1}, deque([source])
    while queue:
        u = queue.popleft()
        for v in children[u]:
            if v not in dist:
                dist[v], count[v] = dist[u] + 1, count[u]
                queue.append(v)
            elif dist[v] == dist[u] + 1:
                count[v] += count[u]
    return dist, count


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


def prosqa_sample(rng, nodes=(17, 28), path=(3, 6)):
    """Draw graphs until one has a target at shortest distance within `path`; return a ProsQA record.

    Appendix A builds the graph and its two label sides (descendants of node 0, of node 1) but leaves open
    which of the two people the question asks about and which leaves become the options. Both are read off
    the official splits (all 300 validation records agree):
    - the target is the farthest leaf that only the entity reaches, the negative a leaf that only the other
      person reaches and that is a concept (a person is never an option);
    - the entity is whichever of the two people has the farther such target (ties at random). Asking about
      node 0 regardless puts 58 % of questions at 3 steps; the official split has 41 %.
    One more choice keeps the question honest at every graph size: whether the negative is a child of another
    person (has_shortcut: "Rex is a gwompus." then gives the answer away in one hop) is drawn first, with the
    official split's share SHORTCUT_SHARE, and the negative is picked of that kind. Left to chance, small
    graphs leak it: 82 % of 6-9-node questions, 21 % at full size.
    """
    shortcut = rng.random() < SHORTCUT_SHARE
    for _ in range(MAX_GRAPH_DRAWS):
        n = rng.randint(*nodes)
        parents, label = prosqa_graph(rng, n)
        children = [[] for _ in range(n)]
        for child, ps in enumerate(parents):
            for p in ps:
                children[p].append(child)
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
    target, neg = rng.choice([i for i in targets if dist[i] == far]), rng.choice(negatives)
    # names are unique within a graph
    symbol = dict(zip(people, rng.sample(PERSON_NAMES, len(people))))
    symbol.update(zip([i for i in range(n) if parents[i]], rng.sample(CONCEPT_NAMES, n - len(people))))
    idx_to_symbol = [symbol[i] for i in range(n)]
    edges = [[p, c] for c in range(n) for p in parents[c]]
    rng.shuffle(edges)

    def statement(p, c):
        return f"{symbol[p]} is a {symbol[c]}." if not parents[p] else f"Every {symbol[p]} is a {symbol[c]}."

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


def prosqa_records(rng, size, nodes, path, held_out, seen):
    """`size` new records of one side of the held-out partition; each question's key is added to `seen`, and a
    question already in `seen` is drawn again. Within the official 3-6-step range each record's length is first
    drawn from OFFICIAL_PATH_SHARES (see generate_prosqa)."""
    shares = OFFICIAL_PATH_SHARES if tuple(path) == (3, 6) else None
    out = []
    while len(out) < size:
        if shares:
            length = rng.choices(list(shares), weights=list(shares.values()))[0]
            r = prosqa_sample(rng, nodes, (length, length))
        else:
            r = prosqa_sample(rng, nodes, path)
        key = question_key(r["question"])
        if (key % HELD_OUT_EVERY == 0) == held_out and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def generate_prosqa(sizes, seed=0, nodes=(17, 28), path=(3, 6)):
    """Splits of ProsQA-style records; deterministic for a seed; no question appears in two splits, and
    validation and test questions are held out (is_held_out) from every training set of any seed.

    With the entity and target rules of prosqa_sample, 44 % of questions take 3 steps and 41 % 4 (official:
    41 % and 44 %): our graphs share twice as many concepts between the two people (12 % vs 6 %), and no
    choice Appendix A leaves open (node count, what a Poisson draw of 0 does, parents with or without
    replacement) closes that. So, as a last resort, for the official range of 3-6 steps each record's length
    is drawn from the official split's shares (OFFICIAL_PATH_SHARES) and graphs are drawn until one has it.
    Other ranges (ProsQA-mini) keep the lengths the rules give.
    """
    rng, seen = random.Random(seed), set()
    return {split: prosqa_records(rng, size, nodes, path, split in HELD_OUT_SPLITS, seen)
            for split, size in sizes.items()}


def prosqa_epoch(seed, epoch, size, nodes, path, seen):
    """Epoch `epoch`'s training questions of the endless stream: `size` records never held out and never in
    `seen` (the keys of every earlier epoch's questions; this epoch's are added). A pure function of the seed
    and the epoch once `seen` holds epochs 0..epoch-1, which is what makes --resume exact."""
    return prosqa_records(random.Random(f"prosqa-stream-{seed}-{epoch}"), size, nodes, path, False, seen)


def prosqa_vocabulary_texts():
    """Texts that use every word the ProsQA generator can write: a compact vocabulary built from them holds every
    question an endless stream will ever draw."""
    people, concepts = PERSON_NAMES, CONCEPT_NAMES
    question = " ".join([f"{p} is a {c}." for p, c in zip(people, concepts)] + [f"Every {c} is a {c}." for c in concepts]
                        + [f"Is {people[0]} a {concepts[0]} or {concepts[1]}?"])
    return record_texts({"question": question, "steps": [f"Every {concepts[0]} is a {concepts[1]}."],
                         "answer": f"{people[0]} is a {concepts[0]}."})


def has_shortcut(record):
    """The cheapest rule that answers a ProsQA question without search: a person other than the one asked
    about ("Rex is a gwompus.") has an edge straight to the wrong option, so the other option is the answer.
    People are the nodes no edge points to."""
    pointed_to = {c for _, c in record["edges"]}
    return any(p != record["root"] and p not in pointed_to and c == record["neg_target"] for p, c in record["edges"])


def children_of(record):
    """A ProsQA record's graph as adjacency lists: children[p] lists every c with an edge p -> c ("p is a c")."""
    children = [[] for _ in record["idx_to_symbol"]]
    for p, c in record["edges"]:
        children[p].append(c)
    return children


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

PRONTOQA_CONCEPTS = ["brimpus", "dumpus", "gorpus", "grimpus", "impus", "jompus", "lempus", "lorpus", "numpus",
                     "rompus", "shumpus", "sterpus", "tumpus", "vumpus", "wumpus", "yumpus", "zumpus"]
PRONTOQA_PROPERTIES = ["sweet", "sour", "feisty", "angry", "slow", "fast", "temperate", "large", "small",
                       "discordant", "opaque", "fruity", "overcast", "wooden", "dull", "bright", "windy", "liquid",
                       "hot", "cold", "melodic", "earthy", "happy", "mean", "moderate", "orange", "spicy",
                       "shy", "kind", "red", "blue", "floral", "metallic", "nervous", "transparent", "aggressive"]


def prontoqa_sample(rng, hops=5, n_branches=6):
    """Chain entity -> c0 -> ... -> c_{hops-1} -> property, with distractors, 25 statements like the official."""
    concepts = rng.sample(PRONTOQA_CONCEPTS, hops + n_branches + 3)
    chain, branches = concepts[:hops], concepts[hops:hops + n_branches]
    decoy, decoy_parent, opposite = concepts[hops + n_branches:]
    props = rng.sample(PRONTOQA_PROPERTIES, hops + n_branches + 1)
    entity = rng.choice(PERSON_NAMES)

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
    rng = random.Random(seed)
    return {f"example{i + 1}": prontoqa_sample(rng) for i in range(n)}


def download(url, path):
    """Download to path + '.part' with a progress bar, then rename: a broken download leaves no file."""
    from tqdm import tqdm
    tmp = path + ".part"
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(path)) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ConnectionError(f"could not download {url}: {e}") from e
    return path


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
            notice(f"ProsQA: no network, so {data_dir}/prosqa_*.json are generated by data.py's generator "
                   "(paper Appendix A), not the official release")
            for s, records in generate_prosqa(PROSQA_SIZES).items():
                write_json_atomic(records, paths[s])
    elif name == "prontoqa":
        raw_path = os.path.join(data_dir, "5hop_0shot_random.json")
        if os.path.exists(raw_path):
            try:
                raw = json.loads(read_text(raw_path))
            except json.JSONDecodeError as e:
                raise DataError(f"{raw_path}: not valid JSON ({e})") from None
        else:
            notice(f"ProntoQA: {raw_path} not found, so the splits come from data.py's built-in 5-hop generator")
            raw = generate_prontoqa_raw(sum(PRONTOQA_SIZES.values()))
        for s, records in split_prontoqa(prontoqa_from_generator(raw, raw_path)).items():
            write_json_atomic(records, paths[s])
    else:
        for s, p in paths.items():
            txt = os.path.join(data_dir, f"gsm8k_{s}.txt")
            try:
                if not os.path.exists(txt):
                    download(GSM8K_URL.format(split=s), txt)
                    with open(txt, encoding="utf-8") as f:
                        pointer = f.read(len(LFS_POINTER)) == LFS_POINTER
                    if pointer:
                        download(GSM8K_LFS_URL.format(split=s), txt)
            except ConnectionError as e:
                raise DataError(f"GSM8k: {txt} is missing and could not be downloaded ({e}); there is no "
                                "generator for GSM8k") from None
            lines = read_text(txt).splitlines(keepends=True)
            if lines and lines[0].startswith(LFS_POINTER):
                raise DataError(f"{txt}: a Git LFS pointer, not the data; fetch the file itself")
            write_json_atomic(gsm8k_from_icot(lines, txt), p)
    return paths


# ----------------------------------------------------------------------------------------------------------
# Token sequences for each method and stage (the reference's dataset.py rules).

def record_texts(r):
    """The texts a record is tokenized as (the reference's layout)."""
    return [r["question"] + "\n", *(s + "\n" for s in r["steps"]), "### " + r["answer"]]


def tokenize_record(tok, r):
    """The parts tokenized separately; concatenated they equal the whole text's tokens (checked in tests)."""
    question, *steps, answer = (tok.encode(t) for t in record_texts(r))
    return {"question": question, "steps": steps, "answer": answer + [tok.eos_id]}


def layout(n_steps, stage, method, c, max_latent_stage, pad_latent_to_max):
    """What stage `stage` does to a sample with n_steps steps: (steps dropped, thoughts, markers?)."""
    if method == "cot":
        return 0, 0, False
    if method in ("no-cot", "icot"):
        return (n_steps if method == "no-cot" else 0), 0, False
    if method == "pause":  # the Pause-token baseline: answer only, after as many pauses as Coconut's thoughts
        return n_steps, max_latent_stage * c, False
    if stage > max_latent_stage:  # past the last stage every step goes; the thought count stays
        drop = n_steps
        thoughts = max_latent_stage if pad_latent_to_max else min(n_steps, max_latent_stage)
    else:
        drop, thoughts = stage, stage
    if method == "no-thought":  # w/o thought: the same curriculum, nothing in place of the steps
        return drop, 0, False
    return drop, thoughts * c, True  # coconut, pause-as-thought, no-curriculum


def thought_prefix(sample, n_thoughts, markers, special):
    """The question, then <bot>, n thoughts, <eot> (without markers: the thought slots alone)."""
    return sample["question"] + ([special.start] if markers else []) + [special.latent] * n_thoughts + (
        [special.end] if markers else [])


def build_example(sample, stage, method, c=1, max_latent_stage=6, pad_latent_to_max=True, rng=None,
                  uniform_prob=0.0, icot_tokens_per_stage=8, special=GPT2_SPECIAL):
    """input_ids and labels for training; labels -100 on question, markers and thoughts."""
    steps = sample["steps"]
    if rng is not None and uniform_prob > 0 and rng.random() < uniform_prob:
        stage = rng.choice(range(len(steps) + 1))  # stage mixing (the analysis model, §5)
    drop, n_thoughts, markers = layout(len(steps), stage, method, c, max_latent_stage, pad_latent_to_max)
    kept = [t for s in steps[drop:] for t in s]
    if method == "icot":  # implicit CoT: reasoning tokens removed from the front, a fixed number per stage
        kept = kept[min(stage * icot_tokens_per_stage, len(kept)):]
    prefix = thought_prefix(sample, n_thoughts, markers, special)
    target = kept + sample["answer"]
    return {"input_ids": prefix + target, "labels": [-100] * len(prefix) + target}


def build_prompt(sample, stage, method, c=1, max_latent_stage=6, pad_latent_to_max=True, special=GPT2_SPECIAL):
    """The evaluation prompt: the question, then whatever the method puts before the written part."""
    steps = sample["steps"]
    _, n_thoughts, markers = layout(len(steps), stage, method, c, max_latent_stage, pad_latent_to_max)
    if method in ("coconut", "pause-as-thought", "no-curriculum") and not pad_latent_to_max:
        # the reference's prompts (get_question_latent_dataset) cap thoughts at the sample's own step count
        # even before the last stage, where its training sequences do not
        n_thoughts = min(n_thoughts, len(steps) * c)
    return {"input_ids": thought_prefix(sample, n_thoughts, markers, special)}


def collate(examples, pad_id=EOS_ID, latent_id=LATENT_ID):
    """Left-pad so the first <|latent|> is in one column (the thought passes then line up), right-pad the rest.

    Pads get position id 0, attention mask 0 and label -100.
    """
    firsts = [e["input_ids"].index(latent_id) for e in examples if latent_id in e["input_ids"]]
    align = max(firsts, default=0)
    lead = [align - e["input_ids"].index(latent_id) if latent_id in e["input_ids"] else 0 for e in examples]
    width = max(l + len(e["input_ids"]) for l, e in zip(lead, examples))
    batch = {"input_ids": [], "attention_mask": [], "position_ids": []}
    if "labels" in examples[0]:
        batch["labels"] = []
    for l, e in zip(lead, examples):
        n = len(e["input_ids"])
        r = width - l - n
        batch["input_ids"].append([pad_id] * l + e["input_ids"] + [pad_id] * r)
        batch["attention_mask"].append([0] * l + [1] * n + [0] * r)
        batch["position_ids"].append([0] * l + list(range(n)) + [0] * r)
        if "labels" in batch:
            batch["labels"].append([-100] * l + e["labels"] + [-100] * r)
    return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


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


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--generate", action="store_true", help="write splits from our generator")
    p.add_argument("--stats", nargs="+", metavar="FILE", help="prosqa: graph statistics of files in the reference "
                   "format (compare a generated set with the official one)")
    p.add_argument("--out", default="data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nodes", type=int, nargs=2, default=(17, 28), metavar=("MIN", "MAX"),
                   help="ProsQA graph size range (official splits: 22.8 nodes on average)")
    p.add_argument("--path", type=int, nargs=2, default=(3, 6), metavar=("MIN", "MAX"),
                   help="ProsQA shortest path length range (official: 3-6 steps)")
    p.add_argument("--train", type=int, default=None)
    p.add_argument("--valid", type=int, default=None)
    p.add_argument("--test", type=int, default=None)
    args = p.parse_args(argv)
    for s in SPLITS:
        if getattr(args, s) is not None and getattr(args, s) < 1:
            raise DataError(f"--{s} {getattr(args, s)}: a split holds at least 1 record")
    if os.path.isfile(args.out):
        raise DataError(f"--out {args.out}: is a file, not a folder")
    if args.stats:
        if args.dataset != "prosqa" or args.generate:
            raise DataError("--stats: only for prosqa, and not with --generate (which prints them itself)")
        print(statistics_table([(path, graph_statistics(load_records(path, graph=True), path))
                                for path in args.stats]))
    elif args.dataset == "prosqa" and args.generate:
        check_generator_flags(args.nodes, args.path)
        sizes = {s: getattr(args, s) if getattr(args, s) is not None else PROSQA_SIZES[s] for s in SPLITS}
        splits = generate_prosqa(sizes, args.seed, tuple(args.nodes), tuple(args.path))
        paths = {s: os.path.join(args.out, f"prosqa_{s}.json") for s in SPLITS}
        for s, records in splits.items():
            write_json_atomic(records, paths[s])
        print(statistics_table([(paths[s], graph_statistics(records)) for s, records in splits.items()]))
    elif args.generate and args.dataset == "prontoqa":
        raw = generate_prontoqa_raw(sum(PRONTOQA_SIZES.values()), args.seed)
        for s, records in split_prontoqa(prontoqa_from_generator(raw)).items():
            write_json_atomic(records, os.path.join(args.out, f"prontoqa_{s}.json"))
        print(f"wrote prontoqa splits to {args.out}")
    elif args.generate:
        raise DataError("--generate: gsm8k has no generator; run without --generate to download it")
    else:
        paths = ensure_dataset(args.dataset, args.out)
        print("\n".join(paths.values()))


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")

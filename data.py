"""Data: what a record becomes — the curriculum's token sequences, their batches, the vocabulary (paper §3-4).

Everything between a record of the reference JSON format and a batch of tensors. The sequences follow the
reference implementation token for token: `question + "\\n"`, each `step + "\\n"`, `"### " + answer`, eos. At
stage k of the curriculum the first k steps are replaced by `<|start-latent|>`, k*c `<|latent|>`, `<|end-latent|>` (§3 "Training
Procedure"); METHODS says what each row of the paper's Table 1 does instead. Where records come from (the
pinned releases, converters, our generators) is tasks.py, whose command line is `python tasks.py`.
Bad input of every kind ends a command with one line, `error: <what>: <why>` (the last section).
"""

import argparse
import json
import os
import re
import urllib.request
from collections import Counter, deque, namedtuple

import torch


class DataError(ValueError):
    """A file or record that cannot be used; the message names the file, record and field."""


# ----------------------------------------------------------------------------------------------------------
# The methods: the paper's Table 1 rows (§4.3-4.4). data, train and eval all read this one table.
#   stages: how the stage follows the epoch: "curriculum" (stage k for its epochs, §3), "none" (stage 0
#           throughout), "last" (the final stage from the first epoch), "epoch" (iCoT: one removal per epoch)
#   drops:  which reasoning steps are removed: "stage" (the first k at stage k), "all", "none"
#   slots:  what stands in their place: "thoughts" (the last hidden state fed back, §3), "pauses" (the
#           <|latent|> embedding itself: nothing fed back, one pass), None
#   markers: <|start-latent|> and <|end-latent|> around the slots

Method = namedtuple("Method", ["stages", "drops", "slots", "markers"])
METHODS = {
    "coconut": Method("curriculum", "stage", "thoughts", True),  # the curriculum with continuous thoughts
    "cot": Method("none", "none", None, False),  # question, all steps, answer
    "no-cot": Method("none", "all", None, False),  # question, answer
    "pause": Method("none", "all", "pauses", False),  # question, as many pauses as Coconut's thoughts, answer
    "icot": Method("epoch", "none", None, False),  # CoT losing --icot_tokens_per_stage more tokens each epoch
    "no-thought": Method("curriculum", "stage", None, False),  # the curriculum removes steps, adds no thoughts
    "pause-as-thought": Method("curriculum", "stage", "pauses", True),  # Coconut's layout, nothing fed back
    "no-curriculum": Method("last", "stage", "thoughts", True),  # Coconut's final stage from epoch 0
}

# GPT-2's 50,257 rows, then <|start-latent|>, <|end-latent|>, <|latent|> (the reference's ids)
Special = namedtuple("Special", ["eos", "start", "end", "latent"])
GPT2_SPECIAL = Special(eos=50256, start=50257, end=50258, latent=50259)
EOS_ID, START_LATENT_ID, END_LATENT_ID, LATENT_ID = GPT2_SPECIAL


# ----------------------------------------------------------------------------------------------------------
# Token sequences for each method and stage (the reference's dataset.py rules), and their batches.

def record_texts(r):
    """The texts a record is tokenized as (the reference's layout)."""
    return [r["question"] + "\n", *(s + "\n" for s in r["steps"]), "### " + r["answer"]]


def tokenize_record(tok, r):
    """The parts tokenized separately; concatenated they equal the whole text's tokens (checked in tests). A
    ProsQA record (one with a graph) also gets its hop_tokens."""
    question, *steps, answer = (tok.encode(t) for t in record_texts(r))
    sample = {"question": question, "steps": steps, "answer": answer + [tok.eos_id]}
    if "edges" in r:
        sample["hops"] = hop_tokens(tok, r)
    return sample


def hop_tokens(tok, r):
    """For a ProsQA record, per distance k = 1, 2, ... from the entity, the tokens naming the nodes at that
    distance (each name's first token): what a thought after k steps of a breadth-first search holds (§5.2),
    and what the frontier loss (--frontier_loss, beyond the paper) scores it on."""
    dist = bfs(children_of(r), r["root"])[0]
    hops = [set() for _ in range(max(dist.values()))]
    for node, d in dist.items():
        if d:
            hops[d - 1].add(tok.encode(" " + r["idx_to_symbol"][node])[0])
    return [sorted(h) for h in hops]


# The curriculum's settings, one record (§3): the method (a row of METHODS), c thoughts per step, the last latent
# stage, whether past it the thought count stays at max_latent_stage * c (the reference's pad_latent_to_max),
# the probability of a random stage per sample (uniform_prob, the §5 analysis model), and iCoT's tokens per stage.
Curriculum = namedtuple("Curriculum", ["method", "c", "max_latent_stage", "pad_latent_to_max", "uniform_prob",
                                       "icot_tokens_per_stage"], defaults=(1, 6, True, 0.0, 8))


def curriculum_of(settings):
    """The Curriculum of a run's flags (vars(args)) or of a checkpoint's meta dict; missing settings default."""
    found = {k: settings[k] for k in Curriculum._fields if k in settings}
    if "pad_latent_to_max" in found:
        found["pad_latent_to_max"] = bool(found["pad_latent_to_max"])
    return Curriculum(**found)


def final_stage(max_latent_stage):
    """The stage past the last latent one: every step gone, max_latent_stage*c thoughts. Training ends there and
    a finished run is evaluated there."""
    return max_latent_stage + 1


def layout(n_steps, stage, cur):
    """What stage `stage` of curriculum `cur` does to a sample with n_steps steps:
    (steps dropped, thought or pause slots, markers?)."""
    # --- exercise 1: the curriculum's sequences ---
    m = METHODS[cur.method]
    if m.drops == "none":
        return 0, 0, False
    if m.drops == "all":  # no-cot; pause: as many pauses as Coconut's thoughts at its last stage
        return n_steps, (cur.max_latent_stage * cur.c if m.slots else 0), False
    if stage > cur.max_latent_stage:  # past the last stage every step goes; the thought count stays
        drop = n_steps
        thoughts = cur.max_latent_stage if cur.pad_latent_to_max else min(n_steps, cur.max_latent_stage)
    else:
        drop, thoughts = stage, stage
    return drop, (thoughts * cur.c if m.slots else 0), m.markers
    # --- end of exercise 1 ---


def step_opener(samples):
    """The token that opens steps in three questions of four or more: "Every" on ProsQA, "<<" on GSM8k (the row
    the reference copies into its three new tokens). None where no token does (each ProntoQA question's steps open
    with its own name: a fixed row would name someone else; a token opening steps in half the questions is a coin
    flip that no fork should hang on) or there are no steps."""
    firsts = [{step[0] for step in sample["steps"] if step} for sample in samples]
    counts = Counter(t for tokens in firsts for t in tokens)
    with_steps = sum(1 for tokens in firsts if tokens)
    token, n = counts.most_common(1)[0] if counts else (None, 0)
    return token if 4 * n >= 3 * with_steps else None


def thought_prefix(sample, n_thoughts, markers, special):
    """The question, then <|start-latent|>, n thoughts, <|end-latent|> (without markers: the thought slots alone)."""
    return sample["question"] + ([special.start] if markers else []) + [special.latent] * n_thoughts + (
        [special.end] if markers else [])


def build_example(sample, stage, cur, rng=None, special=GPT2_SPECIAL):
    """input_ids and labels for training at `stage` of curriculum `cur`; labels -100 on question, markers and
    thoughts. With an rng, cur.uniform_prob of the samples take a random stage instead."""
    steps = sample["steps"]
    if rng is not None and cur.uniform_prob > 0 and rng.random() < cur.uniform_prob:
        stage = rng.choice(range(len(steps) + 1))  # stage mixing (the analysis model, §5)
    drop, n_thoughts, markers = layout(len(steps), stage, cur)
    kept = [t for s in steps[drop:] for t in s]
    if METHODS[cur.method].stages == "epoch":  # iCoT: reasoning tokens removed from the front, a fixed number per stage
        kept = kept[min(stage * cur.icot_tokens_per_stage, len(kept)):]
    prefix = thought_prefix(sample, n_thoughts, markers, special)
    target = kept + sample["answer"]
    return {"input_ids": prefix + target, "labels": [-100] * len(prefix) + target}


def build_prompt(sample, stage, cur, special=GPT2_SPECIAL):
    """The evaluation prompt: the question, then whatever the method puts before the written part."""
    steps = sample["steps"]
    _, n_thoughts, markers = layout(len(steps), stage, cur)
    if METHODS[cur.method].markers and not cur.pad_latent_to_max:
        # the reference's prompts (get_question_latent_dataset) cap thoughts at the sample's own step count
        # even before the last stage, where its training sequences do not
        n_thoughts = min(n_thoughts, len(steps) * cur.c)
    return {"input_ids": thought_prefix(sample, n_thoughts, markers, special)}


def show_stages(record, cur, tok, stages):
    """The curriculum on one record, as text: its training sequence at each stage (the question shown as
    ‹question›), the part that carries loss in ⟦ ⟧ (everything before it has label -100)."""
    sample = tokenize_record(tok, record)
    lines = []
    for stage in stages:
        ex = build_example(sample, stage, cur, special=tok.special)
        scored = next(i for i, label in enumerate(ex["labels"]) if label != -100)
        name = "stage 0 (CoT)" if stage == 0 else f"stage {stage}" + (" (past the last)" if stage >
                                                                       cur.max_latent_stage else "")
        q = len(sample["question"])  # shown once, above; here ‹question›
        text = ("‹question›" + tok.decode(ex["input_ids"][q:scored]) + "⟦" + tok.decode(ex["input_ids"][scored:])
                + "⟧").replace("\n", "\\n ")
        lines.append(f"{name + ':':26s}{text}")
    return "\n".join(lines)


def collate(examples, pad_id=EOS_ID, latent_id=LATENT_ID):
    """Left-pad so the first <|latent|> is in one column (the thought passes then line up), right-pad the rest.

    Pads get position id 0, attention mask 0 and label -100.
    """
    # --- exercise 2: left padding ---
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
    # --- end of exercise 2 ---


BUCKET_POOL = 64  # batches are cut from pools of this many batches' worth of length-sorted samples


def example_batches(examples, batch_size, bucket, rng, latent_id):
    """Each optimizer step's global batch (indices into examples), shuffled. With bucket, samples of
    similar length share a batch: pools of BUCKET_POOL batches are sorted by (column of the first thought,
    length) and cut, then the batches are shuffled (bench.py measures the padding it saves)."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    if bucket:
        def length(i):
            ids = examples[i]["input_ids"]
            return (ids.index(latent_id) if latent_id in ids else 0, len(ids))
        pool = batch_size * BUCKET_POOL
        order = [i for k in range(0, len(order), pool) for i in sorted(order[k:k + pool], key=length)]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if bucket:
        rng.shuffle(batches)
    return batches


# ----------------------------------------------------------------------------------------------------------
# Vocabularies: text <-> the rows of the model's embedding, and where the three Coconut tokens sit.

GPT2_INIT_ID = 16791  # "<<": the reference starts the three new rows as copies of it "to stabilise training"
SPECIAL_NAMES = ("<|endoftext|>", "<|start-latent|>", "<|end-latent|>", "<|latent|>")
VOCABS = ("gpt2", "bpe", "words", "parent-child")
OLD_VOCAB_NAMES = {"pairs": "parent-child"}  # the name the shipped models were trained under
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


def parent_child_words(words):
    """Each statement as parent, then child (--vocab parent-child, beyond the paper). ProsQA's "Every X is a Y."
    becomes [Every, X, Y] and a person's "Tom is a Y." [Tom, Y, .]; ProntoQA's other forms the same, with their
    template last in place of the ".": "Brimpuses are not hot." is [Every, brimpus, not, hot, "_es are _ ."], "Max
    is an impus." [Max, impus, "_ is an _ ."], so that a concept is one token whatever form names it. In every
    statement the child directly follows its parent, so looking up a node's children is copying the token after
    it (an induction head); a small CoT from scratch searched ProsQA only in this layout (docs/lab.md, lever c3)."""
    out, i = [], 0
    while i < len(words):
        w = words[i:i + 6]
        if len(w) == 6 and w[0] == "Every" and w[2:4] == ["is", "a"] and w[5] == ".":
            out, i = out + ["Every", w[1], w[4]], i + 6
        elif len(w) >= 5 and w[0] != "Every" and w[1:3] == ["is", "a"] and w[4] == ".":
            out, i = out + [w[0], w[3], "."], i + 5
        else:
            statement = words[i:words.index(".", i) + 1] if "." in words[i:i + 7] else []
            template = statement_template(statement) if len(statement) >= 4 else None
            out, i = (out + template, i + len(statement)) if template else (out + [words[i]], i + 1)
    return out


def statement_template(s):
    """ProntoQA's statement s (4 to 7 words, ending with ".") as [Every, parent, (not,) child, template] (a rule:
    "Each X is an Y.", "Every X is not P.", "Xes are Yes.") or [parent, (not,) child, template] (a fact: "Max is
    not P."), or None.
    The template holds the rest of the form: a plural's "es", a subject's capital, "a", "an". A "not" stays a word
    of its own, before the child ("Every X not P"): the polarity is then found after the parent, one token, where
    after the child it needed the pair, since a distractor gives the queried property's opposite (docs/lab.md)."""
    body, neg = s[1:-1], ["not"] if "not" in s else []
    form = [w for w in body[:-1] if w != "not"]  # the words after the first, up to the child, "not" apart
    if s[0] in ("Every", "Each") and s[2] == "is" and set(body[2:-1]) <= {"a", "an", "not"}:
        return ["Every", s[1], *neg, s[-2], " ".join([s[0], "_"] + form[1:] + ["_", "."])]
    if s[0][:1].isupper() and s[0].endswith("es") and s[1] == "are" and set(body[1:-1]) <= {"not"}:
        plural = s[-2].endswith("es") and s[-2][:1].islower()
        return ["Every", s[0][0].lower() + s[0][1:-2], *neg, s[-2][:-2] if plural else s[-2],
                " ".join(["_es"] + form + ["_es" if plural else "_", "."])]
    if s[1] == "is" and s[0][:1].isupper() and s[0] not in ("Every", "Each") and set(body[1:-1]) <= {"an", "not"}:
        return [s[0], *neg, s[-2], " ".join(["_"] + form + ["_", "."])]
    return None


def is_template(word):
    return word.count("_") == 2


def fill_template(template, parent, child):
    """A statement's words from its template: "_es are not _ ." with brimpus, hot -> Brimpuses are not hot ."""
    names = iter([parent[:1].upper() + parent[1:] if template.startswith("_es") else parent, child])
    return [next(names) + u[1:] if u[0] == "_" else u for u in template.split()]


def statement_words(words):
    """The inverse of parent_child_words: what a model writes as parent and child is read back as the statement."""
    merged = []  # ProntoQA's [not, P] is read back as one child, "not P"
    for w in words:
        merged = merged[:-1] + ["not " + w] if merged[-1:] == ["not"] else merged + [w]
    out, i, words = [], 0, merged
    while i < len(words):
        w = words[i:i + 4]
        if len(w) == 4 and w[0] == "Every" and is_template(w[3]):
            out, i = out + fill_template(w[3], w[1], w[2]), i + 4
        elif len(w) >= 3 and w[0] != "Every" and is_template(w[2]):
            out, i = out + fill_template(w[2], w[0], w[1]), i + 3
        elif len(w) >= 3 and w[0] == "Every" and w[1] not in ("is", "\n") and w[2] != "\n":
            out, i = out + ["Every", w[1], "is", "a", w[2], "."], i + 3
        elif len(w) >= 3 and w[0][:1].isalpha() and w[1][:1].isalpha() and w[2] == ".":
            out, i = out + [w[0], "is", "a", w[1], "."], i + 3
        else:
            out, i = out + [words[i]], i + 1
    return out


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
    """Text -> row ids of the model's embedding, and back. One of these vocabularies (`kind`):

    - "gpt2": GPT-2's BPE ids as released, then the three Coconut tokens: 50,260 rows (a pretrained GPT-2).
    - "bpe": the same BPE pieces, but a row only for those in `pieces` (the GPT-2 ids of the dataset). A
      128-wide model from scratch spends most of its compute on a 50,257-row output head; ProsQA uses ~100.
    - "words": one row per word of GPT-2's pre-tokenizer, its leading space dropped ("Tom", "shumpus", ".",
      "\n"): every name is one token, the same inside a question and at the start of a step, and a ProsQA-mini
      question 53 tokens instead of 81. Spaces are put back by rule (join_words); a text spaced otherwise
      (GSM8k's "<<4-2=2>>") cannot be represented, which building the vocabulary reports.
    - "parent-child" (beyond the paper): the words, with ProsQA's and ProntoQA's statements as parent then child
      (parent_child_words): a question in a half (ProsQA) to four fifths (ProntoQA) of the tokens, the same
      information, and every child directly after its parent. Built only for text it reads back exactly.
    A compact vocabulary lists its pieces, then eos and the three Coconut tokens, in GPT-2's order. The
    model, the thought loop and the curriculum only see row ids; `state()` goes into checkpoints.
    """

    def __init__(self, kind="gpt2", pieces=None):
        if kind not in VOCABS:
            raise DataError(f"vocabulary {kind!r}: expected one of {', '.join(VOCABS)}")
        self.kind = kind
        self.enc = gpt2_encoding() if kind in ("gpt2", "bpe") else None
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
                raise DataError(f"--vocab {kind}: {t[:60]!r} is not spaced as words are rejoined (one space "
                                "before each word, none before punctuation); use --vocab bpe")
            if kind == "parent-child" and join_words(statement_words(parent_child_words(words))) != t:
                raise DataError(f"--vocab {kind}: {t[:60]!r} does not read back from parent-child statements (ProsQA's "
                                "and ProntoQA's do); use --vocab words")
        if kind == "parent-child":
            split = [parent_child_words(words) for words in split]
        return cls(kind, sorted({w for words in split for w in words}))

    @classmethod
    def from_state(cls, state):
        return cls(OLD_VOCAB_NAMES.get(state["kind"], state["kind"]), state.get("pieces"))

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
        if self.kind == "parent-child":
            units = parent_child_words(units)
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
        words = [self.pieces[r] for r in rows]
        return join_words(statement_words(words) if self.kind == "parent-child" else words)


# ----------------------------------------------------------------------------------------------------------
# Records: the reference JSON format, validated in full before anything is used.

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


# ProsQA records also carry their graph (idx_to_symbol, edges, root, target, neg_target).

def adjacency(n, edges):
    """Children lists of a graph of n nodes: children[p] lists every c with an edge p -> c ("p is a c")."""
    children = [[] for _ in range(n)]
    for p, c in edges:
        children[p].append(c)
    return children


def children_of(record):
    """A ProsQA record's graph as adjacency lists."""
    return adjacency(len(record["idx_to_symbol"]), record["edges"])


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


def persons(record):
    """A ProsQA graph's people ("Rex is a gwompus."): the nodes no edge points to."""
    return {p for p, _ in record["edges"]} - {c for _, c in record["edges"]}


def has_shortcut(record):
    """The cheapest rule that answers a ProsQA question without search: a person other than the one asked
    about has an edge straight to the wrong option, so the other option is the answer."""
    people = persons(record)
    return any(p != record["root"] and p in people and c == record["neg_target"] for p, c in record["edges"])


def depth(record, node):
    """How far a node lies below the graph's top: the largest of its distances from the nodes without parents."""
    children, tops = children_of(record), set(range(len(record["idx_to_symbol"]))) - {c for _, c in record["edges"]}
    return max(bfs(children, t)[0].get(node, -1) for t in tops)


def deeper_option(record):
    """ProsQA's second cheap rule: the option that lies deeper, None on a tie. The target is the farthest leaf the
    person reaches, so it is never the shallower one: on the questions without the one-hop shortcut this answers
    most of them with no reference to the person (docs/results.md)."""
    target, other = depth(record, record["target"]), depth(record, record["neg_target"])
    return None if target == other else record["target"] if target > other else record["neg_target"]


def prontoqa_by_mentions(record):
    """The cheapest rule found that answers ProntoQA without reasoning: of the two rules in the context that name
    the queried property (one gives it, one denies it), believe the one whose subject concept is mentioned more
    often. The distractor's subject appears once, in that rule alone; a concept on the entity's chain appears at
    least twice (the rule that leads to it, the rule that leads on). Returns "True" or "False"."""
    context, query = record["question"].rsplit("True or false:", 1)
    negated, prop = " not " in query, query.split()[-1].rstrip(".")

    def concept(word):  # "Numpuses" and "numpus" are one concept
        word = word.strip(".").lower()
        return word[:-2] if word.endswith("uses") else word
    def mentions(rule):  # of the rule's subject: "Each numpus ...", "Numpuses ..."
        return words.count(concept(rule[1] if rule[0] in ("Each", "Every") else rule[0]))
    words = [concept(w) for w in context.split()]
    rules = [s.split() for s in context.split(".") if s.split() and s.split()[-1] == prop]
    trusted = max(rules, key=mentions)
    return str(("not" in trusted) == negated)


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_json(path):
    """A JSON file's contents; one that is missing, a folder, not UTF-8 or not JSON is a DataError naming it."""
    try:
        return json.loads(read_text(path))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not a data file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def load_records(path, graph=False):
    """A data file's records, every one checked: a file that is missing, not UTF-8, not JSON, not a list, empty,
    or holds a record with a missing or mistyped field is a DataError naming the file (and the record)."""
    records = read_json(path)
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
# One-line errors: every bad flag or file stops a command with `error: <what>: <why>`, exit status 1. Flags
# are checked by argparse as they are read (the types below); rules between flags by the scripts' checks.

def fail(msg):
    raise SystemExit(f"error: {msg}")


def need(ok, flag, value, allowed):
    """A rule between flags: `error: --flag value: what is allowed`."""
    if not ok:
        fail(f"{flag} {value}: {allowed}")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump); a value our types refuse reads `--flag value: why`."""

    def error(self, message):
        fail(re.sub(r"^argument (\S+?)(/\S+)?: (?!invalid |expected |ignored |not allowed )", r"\1 ", message))


def flag_type(convert, ok, allowed):
    """An argparse type: the value converted (argparse names a value that does not convert), refused with
    `--flag value: allowed` when ok(value) is false."""
    def check(text):
        value = convert(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{value}: {allowed}")
        return value
    check.__name__ = convert.__name__  # argparse's "invalid int value: 'x'"
    return check


positive_int = flag_type(int, lambda v: v >= 1, "must be at least 1")
nonnegative_int = flag_type(int, lambda v: v >= 0, "must be 0 or more")
positive_float = flag_type(float, lambda v: v > 0, "must be greater than 0")
nonnegative_float = flag_type(float, lambda v: v >= 0, "must be 0 or more")
switch = flag_type(int, lambda v: v in (0, 1), "0 or 1")


def one_of(names):
    """An argparse type for a name from `names`: `--flag 'x': expected one of a, b, c`."""
    def check(text):
        if text not in names:
            raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(names)}")
        return text
    return check


def run_command(main):
    """Run a script's main(): a DataError (a bad file or record) becomes its one line and exit status 1."""
    try:
        return main()
    except DataError as e:
        fail(str(e))

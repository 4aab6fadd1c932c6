"""coconut.py: the continuous-thought loop equals its definition, recomputed the slow way."""

import copy
import shutil

import pytest
import torch

from conftest import decoding_gpt, tiny_gpt
from coconut import Coconut, greedy_uncached, lm_loss
import data

V, LATENT, START, END, EOS = 64, 61, 62, 63, 60


# --- teacher only: the definition recomputed the slow way, a solution of exercise 3 ---
def naive_coconut_logits(model, input_ids, attention_mask, position_ids):
    """The definition, with no cache: for thought p, rerun the whole sequence and write the hidden state of
    the position before each row's p-th <|latent|> into it. Then one last full pass."""
    embeds = model.embed(input_ids)
    thought_cols = [torch.nonzero(row == LATENT).flatten().tolist() for row in input_ids]
    for p in range(max(len(c) for c in thought_cols)):
        hidden = model(inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask).hidden
        rows = []
        for b, cols in enumerate(thought_cols):
            row = list(embeds[b])
            if p < len(cols):
                row[cols[p]] = hidden[b, cols[p] - 1]
            rows.append(torch.stack(row))
        embeds = torch.stack(rows)
    return model(inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask).logits
# --- end of teacher only ---


def make_row(q_len, n_thoughts, tail_len, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 60, (q_len,), generator=g).tolist()
    tail = torch.randint(0, 60, (tail_len,), generator=g).tolist()
    ids = q + [START] + [LATENT] * n_thoughts + [END] + tail
    labels = [-100] * (q_len + n_thoughts + 2) + tail
    return ids, labels


@pytest.fixture
def mixed_batch():
    """Four rows with 3, 1, 0 and 2 thoughts, batched by data.collate: (rows, batch, left pads per row)."""
    rows = [make_row(7, 3, 5, 0), make_row(4, 1, 8, 1), make_row(9, 0, 3, 2), make_row(5, 2, 2, 3)]
    batch = data.collate([{"input_ids": ids, "labels": labels} for ids, labels in rows], EOS, LATENT)
    lead = [int(mask.argmax()) for mask in batch["attention_mask"]]
    return rows, batch, lead


def gradients(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_same_gradients(model_a, loss_a, model_b, loss_b, rtol, atol):
    """Every parameter's gradient of loss_a (through model_a) equals loss_b's (through model_b)."""
    a, b = gradients(model_a, loss_a), gradients(model_b, loss_b)
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=rtol, atol=atol, msg=n)


# --- teacher only: compares with the solution above ---
def test_forward_equals_naive_recompute_in_logits_loss_and_gradients(mixed_batch):
    _, batch, _ = mixed_batch
    model = tiny_gpt(vocab_size=V)
    out = Coconut(model, LATENT, START, END, EOS)(**batch)
    ref_logits = naive_coconut_logits(model, batch["input_ids"], batch["attention_mask"], batch["position_ids"])
    ref_loss = lm_loss(ref_logits, batch["labels"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.logits[real], ref_logits[real], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.loss, ref_loss, rtol=1e-10, atol=1e-10)
    assert_same_gradients(model, out.loss, model, ref_loss, rtol=1e-8, atol=1e-10)
# --- end of teacher only ---


def test_the_loop_is_a_fixed_point_of_one_forward_pass(mixed_batch):
    """What the thoughts must be, without computing them: every thought's input is the final hidden state of the
    position before it, every other input its token's embedding, and one plain pass over those inputs gives back
    every hidden state."""
    _, batch, _ = mixed_batch
    model = tiny_gpt(vocab_size=V)
    out = Coconut(model, LATENT, START, END, EOS).run_thoughts(batch["input_ids"], batch["attention_mask"],
                                                               batch["position_ids"])
    thought = batch["input_ids"] == LATENT
    rows, cols = torch.nonzero(thought, as_tuple=True)
    torch.testing.assert_close(out.inputs_embeds[rows, cols], out.hidden[rows, cols - 1], rtol=0, atol=0)
    torch.testing.assert_close(out.inputs_embeds[~thought], model.embed(batch["input_ids"])[~thought], rtol=0, atol=0)
    again = model(inputs_embeds=out.inputs_embeds, position_ids=batch["position_ids"],
                  attention_mask=batch["attention_mask"]).hidden
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.hidden[real], again[real], rtol=1e-10, atol=1e-10)


def test_gradients_flow_through_the_thoughts_as_finite_differences_say():
    """The loss depends on the question through the fed-back thoughts too: the gradient must count that path
    (a thought detached from the graph would not)."""
    ids, labels = make_row(5, 3, 4, 8)
    model = tiny_gpt(vocab_size=V)
    coconut = Coconut(model, LATENT, START, END, EOS)

    def loss():
        return coconut(torch.tensor([ids]), labels=torch.tensor([labels])).loss
    model.zero_grad()
    loss().backward()
    for name, index in (("transformer.wte.weight", (ids[2], 3)), ("transformer.h.0.mlp.c_fc.weight", (5, 7)),
                        ("transformer.ln_f.weight", (11,))):
        p = dict(model.named_parameters())[name]
        with torch.no_grad():
            p[index] += 1e-6
            up = float(loss())
            p[index] -= 2e-6
            down = float(loss())
            p[index] += 1e-6
        assert p.grad[index].item() == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-9), name


def test_scoring_only_labelled_positions_gives_the_same_loss_and_gradients(mixed_batch):
    _, batch, _ = mixed_batch
    model = tiny_gpt(vocab_size=V)
    coconut = Coconut(model, LATENT, START, END, EOS)
    full = coconut(**batch)
    lean = coconut(**batch, return_logits=False)
    assert lean.logits is None
    torch.testing.assert_close(lean.loss, full.loss, rtol=1e-12, atol=1e-12)
    assert_same_gradients(model, lean.loss, model, full.loss, rtol=1e-10, atol=1e-12)


def test_n_aligned_thoughts_take_n_plus_one_passes(mixed_batch):
    _, batch, _ = mixed_batch
    coconut = Coconut(tiny_gpt(vocab_size=V), LATENT, START, END, EOS)
    assert coconut.run_thoughts(batch["input_ids"], batch["attention_mask"], batch["position_ids"]).n_passes == 4


def test_thought_slot_holds_previous_final_hidden_state():
    ids, _ = make_row(5, 2, 3, 7)
    ids = torch.tensor([ids])
    coconut = Coconut(tiny_gpt(vocab_size=V), LATENT, START, END, EOS)
    out = coconut.run_thoughts(ids)
    # columns 6 and 7 are thoughts: each input is the final-LayerNorm state of the column before
    torch.testing.assert_close(out.inputs_embeds[0, 6], out.hidden[0, 5])
    torch.testing.assert_close(out.inputs_embeds[0, 7], out.hidden[0, 6])
    assert abs(out.inputs_embeds[0, 6].std().item() - 1) < 0.2


def test_mixed_batch_equals_each_row_alone(mixed_batch):
    rows, batch, lead = mixed_batch
    coconut = Coconut(tiny_gpt(vocab_size=V), LATENT, START, END, EOS)
    out = coconut(**batch)
    for b, ((ids, labels), l) in enumerate(zip(rows, lead)):
        alone = coconut(torch.tensor([ids]), labels=torch.tensor([labels]))
        torch.testing.assert_close(out.logits[b, l:l + len(ids)], alone.logits[0], rtol=1e-9, atol=1e-9)


def test_pause_as_thought_keeps_the_latent_embedding_in_one_pass(mixed_batch):
    _, batch, _ = mixed_batch
    model = tiny_gpt(vocab_size=V)
    pause = Coconut(model, LATENT, START, END, EOS, pause_as_thought=True)
    out = pause.run_thoughts(batch["input_ids"], batch["attention_mask"], batch["position_ids"])
    plain = model(batch["input_ids"], position_ids=batch["position_ids"], attention_mask=batch["attention_mask"])
    assert out.n_passes == 1
    torch.testing.assert_close(out.hidden, plain.hidden)


def test_no_thoughts_is_a_plain_forward():
    model = tiny_gpt(vocab_size=V)
    ids = torch.randint(0, 60, (2, 9))
    out = Coconut(model, LATENT, START, END, EOS)(ids, labels=ids)
    torch.testing.assert_close(out.logits, model(ids).logits)
    torch.testing.assert_close(out.loss, lm_loss(model(ids).logits, ids))


def test_loss_ignores_minus_100_and_scores_next_tokens():
    logits = torch.randn(1, 4, 5, dtype=torch.float64)
    labels = torch.tensor([[-100, 2, -100, 4]])
    expected = torch.nn.functional.cross_entropy(logits[0, [0, 2]], torch.tensor([2, 4]))
    torch.testing.assert_close(lm_loss(logits, labels), expected)


def test_thought_in_column_zero_is_rejected():
    coconut = Coconut(tiny_gpt(vocab_size=V), LATENT, START, END, EOS)
    with pytest.raises(ValueError, match="column 0"):
        coconut(torch.tensor([[LATENT, 3, 4]]))


# --- generation --------------------------------------------------------------------------------------------

def prompts_batch(prompt_rows):
    return data.collate([{"input_ids": p} for p in prompt_rows], EOS, LATENT)


def test_batched_generate_equals_row_by_row_and_uncached_decoding():
    model = decoding_gpt(seed=5, eos_id=EOS, eos_position=15, special_ids=(LATENT, START, END))
    coconut = Coconut(model, LATENT, START, END, EOS)
    prompts = [make_row(6, 3, 0, 10)[0], make_row(3, 3, 0, 11)[0], make_row(8, 1, 0, 12)[0],
               [5, 6, 7, 8]]  # no thoughts at all: the collator right-pads this row
    batched = coconut.generate(**prompts_batch(prompts), max_new_tokens=12)
    for b, p in enumerate(prompts):
        alone = coconut.generate(torch.tensor([p]), max_new_tokens=12)
        n = int(batched.lengths[b])
        assert n == int(alone.lengths[0])
        assert batched.tokens[b, :n].tolist() == alone.tokens[0, :n].tolist()
        assert batched.tokens[b, :n].tolist() == greedy_uncached(coconut, p, 12)


@pytest.mark.parametrize("side", ["left", "right"])
def test_generate_continues_each_left_padded_row_at_its_own_position(side):
    """Prompts of 2, 5 and 7 tokens padded to one width, on a model whose output depends on the position: each
    row continues after its own last real token, at its own next position (not the batch's next column)."""
    model = decoding_gpt(seed=3, eos_id=EOS, eos_position=40, special_ids=(LATENT, START, END))
    coconut = Coconut(model, LATENT, START, END, EOS)
    prompts = [[11, 12], [21, 22, 23, 24, 25], [31, 32, 33, 34, 35, 36, 37]]
    pads = [7 - len(p) for p in prompts]
    rows = [[EOS] * k + p if side == "left" else p + [EOS] * k for p, k in zip(prompts, pads)]
    mask = [[0] * k + [1] * len(p) if side == "left" else [1] * len(p) + [0] * k for p, k in zip(prompts, pads)]
    positions = [[0] * k + list(range(len(p))) if side == "left" else list(range(len(p))) + [0] * k
                 for p, k in zip(prompts, pads)]
    g = coconut.generate(torch.tensor(rows), torch.tensor(mask), torch.tensor(positions), max_new_tokens=6)
    for b, p in enumerate(prompts):
        assert g.tokens[b].tolist() == greedy_uncached(coconut, p, 6)
        assert int(g.lengths[b]) == 6


def test_generate_stops_each_row_at_eos_and_counts_tokens_before_it():
    """The model writes eos when it reads position 8: after 6 tokens for a 3-token prompt, after 3 for a 6-token
    one. A finished row writes eos from then on while the other row goes on."""
    model = decoding_gpt(seed=1, eos_id=EOS, eos_position=8, special_ids=(LATENT, START, END))
    coconut = Coconut(model, LATENT, START, END, EOS)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9]]
    g = coconut.generate(**prompts_batch(prompts), max_new_tokens=10)
    assert g.lengths.tolist() == [6, 3]
    for b, p in enumerate(prompts):
        n = int(g.lengths[b])
        assert g.tokens[b, :n].tolist() == greedy_uncached(coconut, p, 10)
        assert not g.tokens[b, :n].eq(EOS).any() and g.tokens[b, n:].eq(EOS).all()


# --- a compact vocabulary is the full one with unused rows removed ------------------------------------------

def test_compact_vocabulary_model_equals_the_full_model_without_its_unused_rows():
    from conftest import gpt2_tokenizer, shared_file
    full_tok = gpt2_tokenizer()
    records = data.load_records(shared_file("prosqa_valid.json"))[:6]
    compact_tok = data.Tokenizer.build("bpe", [t for r in records for t in data.record_texts(r)])
    # compact row r is GPT-2 id used[r]: the pieces, then eos and the three Coconut tokens
    used = torch.tensor(compact_tok.pieces + list(data.GPT2_SPECIAL))
    full = tiny_gpt(vocab_size=data.GPT2_SPECIAL.latent + 1, block_size=512, seed=2)
    compact = tiny_gpt(vocab_size=compact_tok.vocab_size, block_size=512, seed=3)
    compact.load_state_dict({k: v[used] if k in ("transformer.wte.weight", "lm_head.weight") else v
                             for k, v in full.state_dict().items()})

    def batch(tok):
        cur = data.Curriculum("coconut")
        examples = [data.build_example(data.tokenize_record(tok, r), 2, cur, special=tok.special) for r in records]
        return data.collate(examples, tok.eos_id, tok.special.latent)
    b_full, b_compact = batch(full_tok), batch(compact_tok)
    assert torch.equal(used[b_compact["input_ids"]], b_full["input_ids"])  # the same sequences, renumbered
    s, S = compact_tok.special, data.GPT2_SPECIAL
    out_compact = Coconut(compact, s.latent, s.start, s.end, s.eos)(**b_compact)
    out_full = Coconut(full, S.latent, S.start, S.end, S.eos)(**b_full)
    torch.testing.assert_close(out_compact.inputs_embeds, out_full.inputs_embeds, rtol=0, atol=0)
    torch.testing.assert_close(out_compact.logits, out_full.logits[..., used], rtol=1e-12, atol=1e-12)
    # the loss over the rows the data uses: the full model's logits restricted to them
    torch.testing.assert_close(out_compact.loss, lm_loss(out_full.logits[..., used], b_compact["labels"]),
                               rtol=1e-12, atol=1e-12)
    lean = Coconut(compact, s.latent, s.start, s.end, s.eos)(**b_compact, return_logits=False)
    torch.testing.assert_close(lean.loss, out_compact.loss, rtol=1e-12, atol=1e-12)


# --- torch.compile (train.py --compile) ---------------------------------------------------------------------

@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                    reason="torch.compile's CPU backend needs a C++ compiler; none on PATH")
def test_the_compiled_model_equals_eager_in_loss_and_gradients(mixed_batch):
    _, batch, _ = mixed_batch
    eager = tiny_gpt(vocab_size=V)
    compiled = copy.deepcopy(eager)
    compiled.compile(dynamic=True)  # what --compile 1 does: the forward compiled in place
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints are unchanged
    out_eager = Coconut(eager, LATENT, START, END, EOS)(**batch, return_logits=False)
    out_compiled = Coconut(compiled, LATENT, START, END, EOS)(**batch, return_logits=False)
    torch.testing.assert_close(out_compiled.loss, out_eager.loss, rtol=1e-10, atol=1e-12)
    assert_same_gradients(compiled, out_compiled.loss, eager, out_eager.loss, rtol=1e-8, atol=1e-10)


# --- the frontier loss (--frontier_loss, beyond the paper) ---------------------------------------------------

def test_frontier_loss_scores_each_thought_on_the_names_within_its_hops():
    """Thought j must name a node within j//c + 1 hops: -log of the summed probability of those names, averaged
    over the thoughts of the batch."""
    from coconut import frontier_loss
    model = tiny_gpt(vocab_size=V, seed=6)
    coconut = Coconut(model, LATENT, START, END, EOS)
    batch = data.collate([{"input_ids": make_row(4, 2, 3, 30)[0]}, {"input_ids": make_row(6, 1, 2, 31)[0]}],
                         EOS, LATENT)
    out = coconut(**batch)
    hidden = coconut.run_thoughts(**batch).hidden
    hops = [[[5, 6], [7]], [[9], [10, 11]]]  # row 0: hop 1 names 5 and 6, hop 2 names 7; row 1: 9, then 10 and 11

    def score(b, j, names):  # thought j of row b is the hidden state before its slot
        col = torch.nonzero(batch["input_ids"][b] == LATENT).flatten()[j]
        return -model.lm_head(hidden[b, col - 1]).softmax(-1)[names].sum().log()
    for c, expected in ((1, [score(0, 0, [5, 6]), score(0, 1, [5, 6, 7]), score(1, 0, [9])]),
                        (2, [score(0, 0, [5, 6]), score(0, 1, [5, 6]), score(1, 0, [9])])):  # c=2: 2 thoughts a hop
        got = frontier_loss(model.lm_head, out.inputs_embeds, batch["input_ids"], LATENT, hops, c)
        torch.testing.assert_close(got, torch.stack(expected).mean(), rtol=1e-10, atol=1e-12)

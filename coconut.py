"""Chain of Continuous Thought: the loop that feeds the last hidden state back as the next input (paper §3, Fig. 1).

Every `<|latent|>` position t receives, as its input embedding, the final hidden state (after ln_f) at
position t-1. That state only exists once position t-1 has been computed, so a sequence with n thoughts is
run in n+1 passes over the key/value cache: the first pass up to the first thought, then one pass starting at
each thought and running up to the next thought (after the last one, to the end). Each position is computed exactly once, so the whole costs about one forward pass,
and gradients flow back through every thought into the passes before it (§3, "Training Procedure").

The interface mirrors the reference implementation (facebookresearch/coconut) so results compare one to one:
`Coconut(model, latent_id, start_id, end_id, eos_id)`, `forward(input_ids, attention_mask, labels,
position_ids)` -> `.loss`, `.logits`.
"""

from collections import namedtuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Outputs = namedtuple("Outputs", ["loss", "inputs_embeds", "logits"])
ThoughtPass = namedtuple("ThoughtPass", ["hidden", "inputs_embeds", "past_kv", "n_passes"])
Generation = namedtuple("Generation", ["tokens", "lengths", "n_passes"])


def lm_loss(logits, labels):
    """Next-token cross-entropy; labels of -100 (question, markers, thoughts, padding) are not scored."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


def with_defaults(input_ids, attention_mask, position_ids):
    """An all-ones mask and positions 0..T-1 where none are given (unpadded rows)."""
    B, T = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if position_ids is None:
        position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
    return attention_mask, position_ids


def last_real_column(attention_mask):
    """Each row's last unpadded column: where its prompt ends, whichever side it was padded on."""
    return attention_mask.shape[1] - 1 - attention_mask.flip(1).long().argmax(1)


class Coconut(nn.Module):
    def __init__(self, model, latent_id, start_id, end_id, eos_id, pause_as_thought=False):
        super().__init__()
        self.model = model
        self.latent_id, self.start_id, self.end_id, self.eos_id = latent_id, start_id, end_id, eos_id
        # The "pause as thought" ablation (§4.4): thought slots keep the <|latent|> embedding and act as
        # learned pause tokens, with the same curriculum. Nothing is fed back, so one pass suffices.
        self.pause_as_thought = pause_as_thought

    def run_thoughts(self, input_ids, attention_mask=None, position_ids=None):
        """The thought loop: returns ThoughtPass(hidden, inputs_embeds with thoughts, past_kv, n_passes).

        Rows may hold different numbers of thoughts at different columns. Passes end at every column that
        holds a thought in some row; at that column those rows take the last hidden state of the pass just
        finished, the other rows their own token's embedding. With the collator's alignment (first thought in
        the same column everywhere) n thoughts give exactly n+1 passes, as in the reference.
        """
        # --- exercise 3: the continuous-thought loop ---
        T = input_ids.shape[1]  # input_ids (B, T)
        attention_mask, position_ids = with_defaults(input_ids, attention_mask, position_ids)
        embeds = self.model.embed(input_ids)  # (B, T, C)
        is_thought = input_ids == self.latent_id  # (B, T)
        # the columns where some row holds a thought: each ends a pass
        columns = [] if self.pause_as_thought else torch.nonzero(is_thought.any(0)).flatten().tolist()
        if columns and columns[0] == 0:
            raise ValueError("a <|latent|> token in column 0 has no preceding hidden state to receive")
        bounds = [0] + columns + [T]
        chunks_hidden, chunks_embeds, past_kv = [], [], None
        for start, end in zip(bounds[:-1], bounds[1:]):
            x = embeds[:, start:end]  # (B, end - start, C)
            if start > 0 and not self.pause_as_thought:
                thought = chunks_hidden[-1][:, -1]  # (B, C): final hidden state at position start-1
                first = torch.where(is_thought[:, start, None], thought.to(x.dtype), x[:, 0])  # (B, C)
                x = torch.cat([first[:, None], x[:, 1:]], dim=1)
            # the pass sees positions 0..end-1: the cached keys/values of 0..start-1, and these
            out = self.model(inputs_embeds=x, position_ids=position_ids[:, start:end],
                             attention_mask=attention_mask[:, :end], past_kv=past_kv, with_logits=False)
            chunks_hidden.append(out.hidden)
            chunks_embeds.append(x)
            past_kv = out.past_kv
        # hidden and inputs_embeds (B, T, C) as one pass would give them, had the thoughts been known up front
        return ThoughtPass(torch.cat(chunks_hidden, 1), torch.cat(chunks_embeds, 1), past_kv, len(bounds) - 1)
        # --- end of exercise 3 ---

    def forward(self, input_ids, attention_mask=None, labels=None, position_ids=None, return_logits=True):
        """Outputs(loss, inputs_embeds, logits (B,T,V)).

        return_logits=False (training) applies the output head only where a label is scored and returns
        logits=None: the same loss, without a (B, T, 50260) tensor.
        """
        out = self.run_thoughts(input_ids, attention_mask, position_ids)
        if return_logits:
            logits = self.model.lm_head(out.hidden)
            loss = None if labels is None else lm_loss(logits, labels)
        else:
            logits = None
            scored = labels[:, 1:] != -100
            loss = F.cross_entropy(self.model.lm_head(out.hidden[:, :-1][scored]), labels[:, 1:][scored])
        return Outputs(loss=loss, inputs_embeds=out.inputs_embeds, logits=logits)

    def decoding_state(self, attention_mask, max_new_tokens):
        """What greedy decoding starts from: row indices, each row's last prompt column, and per row the written
        tokens (B, max_new_tokens) eos-filled, their count and whether the row is done."""
        B, device = attention_mask.shape[0], attention_mask.device
        tokens = torch.full((B, max_new_tokens), self.eos_id, dtype=torch.long, device=device)
        lengths = torch.zeros(B, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        return torch.arange(B, device=device), last_real_column(attention_mask), tokens, lengths, done

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, position_ids=None, max_new_tokens=128):
        """Batched greedy decoding with the key/value cache after the thoughts.

        Prompts may be padded on either side (attention_mask 0); each row continues from its last real token
        at its own next position, so every row gets exactly the tokens it would get decoded alone. A row stops
        at eos (not counted in its length, not written) or after max_new_tokens.
        Returns Generation(tokens (B, max_new_tokens) eos-filled, lengths (B,), n_passes forward passes).
        """
        # --- exercise 4: batched cached decoding ---
        attention_mask, position_ids = with_defaults(input_ids, attention_mask, position_ids)
        out = self.run_thoughts(input_ids, attention_mask, position_ids)
        rows, last, tokens, lengths, done = self.decoding_state(attention_mask, max_new_tokens)
        next_logits = self.model.lm_head(out.hidden[rows, last])
        next_pos = position_ids[rows, last] + 1
        past_kv, n_passes = out.past_kv, out.n_passes
        for step in range(max_new_tokens):
            tok = torch.where(done, self.eos_id, next_logits.argmax(-1))
            done = done | (tok == self.eos_id)
            tokens[:, step] = tok
            lengths += (~done).long()
            if done.all() or step == max_new_tokens - 1:
                break
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            o = self.model(idx=tok[:, None], position_ids=next_pos[:, None], attention_mask=attention_mask,
                           past_kv=past_kv)
            next_logits, past_kv, next_pos = o.logits[:, -1], o.past_kv, next_pos + 1
            n_passes += 1
        return Generation(tokens, lengths, n_passes)
        # --- end of exercise 4 ---

def frontier_loss(lm_head, inputs_embeds, input_ids, latent_id, hops, c):
    """Beyond the paper (the frontier loss of Ber666/emergence-of-superposition's "Coconut-BFS"): the j-th thought
    of a row (0-based; its input embedding, the final hidden state before it) is scored by the probability the
    output head puts on the names of the nodes within j//c + 1 hops of the entity: -log of that summed
    probability, averaged over every thought of the batch. hops[b]: row b's data.hop_tokens."""
    is_thought = input_ids == latent_id  # (B, T)
    rows, cols = torch.nonzero(is_thought, as_tuple=True)
    if not len(rows):
        return inputs_embeds.sum() * 0
    first = is_thought.float().argmax(1)  # each row's first thought column
    within = ((cols - first[rows]) // c).tolist()  # thought j reaches j//c + 1 hops: hops[:j//c + 1]
    logits = lm_head(inputs_embeds[rows, cols])  # (P, V); in float32 at least (bf16 autocast)
    logp = F.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    named = torch.zeros_like(logp, dtype=torch.bool)
    for p, (b, k) in enumerate(zip(rows.tolist(), within)):
        named[p, [t for hop in hops[b][:k + 1] for t in hop]] = True
    return -logp.masked_fill(~named, float("-inf")).logsumexp(-1).mean()


@torch.no_grad()
def greedy_uncached(coconut, prompt, max_new_tokens):
    """The reference's decoding, kept as the definition that Coconut.generate is tested and benchmarked against:
    one question at a time, the whole prefix (thoughts too) rerun for every new token. Returns the new tokens."""
    ids, out = list(prompt), []
    device = coconut.model.lm_head.weight.device
    for _ in range(max_new_tokens):
        tok = int(coconut(torch.tensor([ids], device=device)).logits[0, -1].argmax())
        if tok == coconut.eos_id:
            break
        out.append(tok)
        ids.append(tok)
    return out

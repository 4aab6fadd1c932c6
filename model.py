"""GPT-2, written out in full (nanoGPT style); weights.py loads the released weights into it.

Coconut (Hao et al. 2024, §3) is built on a pretrained GPT-2. Two things beyond nanoGPT are needed:
- inputs may be embeddings instead of token ids, because a continuous thought is a vector, not a token;
- the final hidden state *after the last LayerNorm* is returned next to the logits, because that vector is
  what Coconut feeds back as the next input embedding;
plus explicit position ids, a padding mask (training batches are left-padded) and a key/value cache that
each call extends and returns, so that the n+1 passes of the thought loop cost about one forward.
"""

import math
from collections import namedtuple
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

GPT2_VOCAB_SIZE = 50257

GPTOutput = namedtuple("GPTOutput", ["logits", "hidden", "past_kv"])


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = GPT2_VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    layer_norm_epsilon: float = 1e-5
    init_std: float = 0.02  # GPT-2's, tuned for width 768; a narrow model from scratch learns faster with more


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x, attn_mask, past_kv):
        B, T, C = x.shape  # batch, new positions, width (n_embd)
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if past_kv is not None:
            # torch.cat, not an in-place write: the training loss backpropagates through every pass.
            k = torch.cat([past_kv[0], k], dim=2)  # (B, nh, S, hs), S = past + T positions
            v = torch.cat([past_kv[1], v], dim=2)
        if attn_mask is None:  # no padding and no cache: the fast fused causal kernel
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        else:  # attn_mask (B|1, 1, T, S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again: (B, T, C)
        return self.c_proj(y), (k, v)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's "gelu_new"


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask, past_kv):
        a, kv = self.attn(self.ln_1(x), attn_mask, past_kv)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


def build_attn_mask(attention_mask, T, past_len, device):
    """Boolean (B|1, 1, T, past_len+T) mask: causal, and keys where attention_mask is 0 hidden.

    A query always sees its own key. A left pad has no visible key before it; with every key masked SDPA
    returns NaN, and the NaN leaks into gradients. Letting it see itself keeps pads finite, and no real
    token ever attends to a pad, so real positions are unchanged.
    """
    S = past_len + T
    q_pos = torch.arange(past_len, S, device=device)[:, None]
    k_pos = torch.arange(S, device=device)[None, :]
    mask = k_pos <= q_pos  # (T, S)
    if attention_mask is not None:
        if attention_mask.shape[1] != S:
            raise ValueError(f"attention_mask covers {attention_mask.shape[1]} keys; past + new positions are {S}")
        mask = mask & (attention_mask[:, None, :].bool() | (k_pos == q_pos))
        return mask[:, None, :, :]
    return mask[None, None, :, :]


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def embed(self, idx):
        return self.transformer.wte(idx)

    def forward(self, idx=None, inputs_embeds=None, position_ids=None, attention_mask=None, past_kv=None,
                with_logits=True):
        """Returns GPTOutput(logits (B,T,V), hidden (B,T,C) after ln_f, past_kv extended by these T positions).

        with_logits=False skips the output head (logits None): a caller that scores only some positions
        applies lm_head to those, which on a small model is most of the compute.

        attention_mask (B, past+T): 1 for real tokens, 0 for padding; position_ids (B, T): explicit, since
        left pads take position 0 and real tokens count from 0 (reference collator).
        """
        if (idx is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of idx and inputs_embeds")
        x = self.transformer.wte(idx) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        B, T, _ = x.shape
        past_len = 0 if past_kv is None else past_kv[0][0].shape[2]
        if past_len + T > self.config.block_size:
            raise ValueError(f"sequence of {past_len + T} positions exceeds block_size {self.config.block_size}")
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + T, device=x.device)[None, :]
        x = x + self.transformer.wpe(position_ids)  # position_ids (B|1, T) -> (B|1, T, C), broadcast over B
        attn_mask = None
        if attention_mask is not None or past_len > 0:
            attn_mask = build_attn_mask(attention_mask, T, past_len, x.device)
        new_kv = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block(x, attn_mask, None if past_kv is None else past_kv[i])
            new_kv.append(kv)
        hidden = self.transformer.ln_f(x)
        return GPTOutput(self.lm_head(hidden) if with_logits else None, hidden, new_kv)

    def add_token_rows(self, n, init_from):
        """Grow the vocabulary by n rows, each a copy of row `init_from`'s embedding; the head stays tied.

        Coconut appends its three tokens this way; which rows they are is the tokenizer's business (data.py).
        """
        old = self.transformer.wte.weight
        new = nn.Embedding(old.shape[0] + n, old.shape[1], device=old.device, dtype=old.dtype)
        with torch.no_grad():
            new.weight[: old.shape[0]] = old
            new.weight[old.shape[0]:] = old[init_from]
        self.transformer.wte = new
        self.lm_head = nn.Linear(old.shape[1], old.shape[0] + n, bias=False, device=old.device, dtype=old.dtype)
        self.lm_head.weight = new.weight
        self.config.vocab_size = old.shape[0] + n

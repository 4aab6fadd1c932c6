"""GPT-2, written out in full (nanoGPT style), loadable from the released weights.

Coconut (Hao et al. 2024, §3) is built on a pretrained GPT-2. Two things beyond nanoGPT are needed:
- inputs may be embeddings instead of token ids, because a continuous thought is a vector, not a token;
- the final hidden state *after the last LayerNorm* is returned next to the logits, because that vector is
  what Coconut feeds back as the next input embedding;
plus explicit position ids, a padding mask (training batches are left-padded) and a key/value cache that
each call extends and returns, so that the n+1 passes of the thought loop cost about one forward.
"""

import json
import math
import os
import struct
import sys
from collections import namedtuple
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import download  # a plain file fetch (GPT-2's weights); nothing of the vocabulary or the data

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
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if past_kv is not None:
            # torch.cat, not an in-place write: the training loss backpropagates through every pass.
            k = torch.cat([past_kv[0], k], dim=2)
            v = torch.cat([past_kv[1], v], dim=2)
        if attn_mask is None:  # no padding and no cache: the fast fused causal kernel
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
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
        x = self.transformer.wte(idx) if inputs_embeds is None else inputs_embeds
        B, T, _ = x.shape
        past_len = 0 if past_kv is None else past_kv[0][0].shape[2]
        if past_len + T > self.config.block_size:
            raise ValueError(f"sequence of {past_len + T} positions exceeds block_size {self.config.block_size}")
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + T, device=x.device)[None, :]
        x = x + self.transformer.wpe(position_ids)
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

    @classmethod
    def from_pretrained(cls, name_or_path, cache_dir=None):
        """Load `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl` (downloaded once) or a Hugging Face folder."""
        if os.path.isdir(name_or_path):
            folder = name_or_path
        elif name_or_path in HF_REPOS:
            folder = download_gpt2(name_or_path, cache_dir)
        else:
            raise ValueError(f"--model {name_or_path!r}: neither a folder nor one of {', '.join(HF_REPOS)}")
        config_path = os.path.join(folder, "config.json")
        if not os.path.exists(config_path):
            raise FileNotFoundError(f"{folder}: no config.json (a Hugging Face GPT-2 folder has one)")
        try:
            with open(config_path) as f:
                hf = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{config_path}: not valid JSON ({e})") from None
        if not isinstance(hf, dict):
            raise ValueError(f"{config_path}: expected a JSON object")
        missing = [k for k in ("vocab_size", "n_layer", "n_head", "n_embd") if k not in hf]
        if missing:
            raise ValueError(f"{config_path}: missing {', '.join(missing)}")
        for k in ("vocab_size", "n_layer", "n_head", "n_embd", "n_positions"):
            v = hf.get(k, 1)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{config_path}: {k} must be a whole number of at least 1, not {v!r}")
        if hf["n_embd"] % hf["n_head"]:
            raise ValueError(f"{config_path}: n_head {hf['n_head']} does not divide n_embd {hf['n_embd']}")
        config = GPTConfig(block_size=hf.get("n_positions", 1024), vocab_size=hf["vocab_size"],
                           n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"],
                           layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5))
        st_path = os.path.join(folder, "model.safetensors")
        bin_path = os.path.join(folder, "pytorch_model.bin")
        if not os.path.exists(st_path) and not os.path.exists(bin_path):
            raise FileNotFoundError(f"{folder}: neither model.safetensors nor pytorch_model.bin")
        source = st_path if os.path.exists(st_path) else bin_path
        try:  # weights_only: a .bin that would run code when unpickled is refused
            state = read_safetensors(st_path) if source == st_path else torch.load(bin_path, map_location="cpu",
                                                                                    weights_only=True)
        except Exception as e:
            raise ValueError(f"{source}: not a readable weights file ({str(e).splitlines()[0]})") from None
        model = cls(config)
        model.load_hf_state_dict(state, source)
        return model

    def load_hf_state_dict(self, state, source="checkpoint"):
        """Copy a Hugging Face GPT-2 state dict in; every key accounted for, or an error naming the keys."""
        # HF's Conv1D stores (in, out); nn.Linear wants (out, in).
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        ours = self.state_dict()
        theirs = {}
        for k, v in state.items():
            k = k if k.startswith("transformer.") or k == "lm_head.weight" else "transformer." + k
            if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
                continue  # HF's causal-mask buffers, not weights
            if k == "lm_head.weight":
                continue  # tied to wte; checked below
            theirs[k] = v.t() if k.endswith(transposed) else v
        expected = {k for k in ours if k != "lm_head.weight"}
        missing, unexpected = sorted(expected - theirs.keys()), sorted(theirs.keys() - expected)
        wrong = sorted(k for k in expected & theirs.keys() if theirs[k].shape != ours[k].shape)
        if missing or unexpected or wrong:
            lines = [f"{source}: does not match a GPT-2 of {self.config}"]
            lines += [f"  missing key {k}" for k in missing]
            lines += [f"  unexpected key {k}" for k in unexpected]
            lines += [f"  wrong shape {k}: {tuple(theirs[k].shape)} vs {tuple(ours[k].shape)}" for k in wrong]
            raise ValueError("\n".join(lines))
        with torch.no_grad():
            for k, v in theirs.items():
                ours[k].copy_(v)


# ----------------------------------------------------------------------------------------------------------
# Released weights: the Hugging Face layout, read without `transformers` or `safetensors`.

HF_REPOS = {n: f"openai-community/{n}" for n in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(path):
    """The format is an 8-byte little-endian header length, a JSON header, then raw little-endian tensors."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype) if end > begin else torch.empty(0, dtype=dtype)
        if sys.byteorder == "big":
            t = t.view(torch.uint8).view(-1, t.element_size()).flip(1).reshape(-1).view(dtype)
        out[name] = t.reshape(info["shape"])
    return out


def write_safetensors(state, path):
    """The inverse of read_safetensors (tests write checkpoints in the Hugging Face layout with it)."""
    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for name, t in state.items():
        raw = t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))


def default_cache_dir():
    return os.environ.get("COCONUT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "coconut"))


def download_gpt2(name, cache_dir=None):
    """Fetch config.json and model.safetensors once; afterwards the cache is used with no network."""
    folder = os.path.join(cache_dir or default_cache_dir(), name)
    files = ("config.json", "model.safetensors")
    if all(os.path.exists(os.path.join(folder, f)) for f in files):
        return folder
    os.makedirs(folder, exist_ok=True)
    for fname in files:
        path = os.path.join(folder, fname)
        if not os.path.exists(path):
            download(f"https://huggingface.co/{HF_REPOS[name]}/resolve/main/{fname}", path)
    return folder

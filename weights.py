"""Released files: GPT-2's weights in the Hugging Face layout, read without `transformers` or `safetensors`.

Coconut starts from a pretrained GPT-2 (paper §4.2). `from_pretrained` builds model.py's GPT from a Hugging Face
folder (config.json plus model.safetensors or pytorch_model.bin) or from the named release, downloaded once
(data.download, which tasks.py fetches the pinned datasets with too).
"""

import json
import os
import struct
import sys

import torch

from data import download
from model import GPT, GPTConfig

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


def from_pretrained(name_or_path, cache_dir=None):
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
    model = GPT(config)
    load_hf_state_dict(model, state, source)
    return model


def load_hf_state_dict(model, state, source="checkpoint"):
    """Copy a Hugging Face GPT-2 state dict in; every key accounted for, or an error naming the keys."""
    # HF's Conv1D stores (in, out); nn.Linear wants (out, in).
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    ours = model.state_dict()
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
        lines = [f"{source}: does not match a GPT-2 of {model.config}"]
        lines += [f"  missing key {k}" for k in missing]
        lines += [f"  unexpected key {k}" for k in unexpected]
        lines += [f"  wrong shape {k}: {tuple(theirs[k].shape)} vs {tuple(ours[k].shape)}" for k in wrong]
        raise ValueError("\n".join(lines))
    with torch.no_grad():
        for k, v in theirs.items():
            ours[k].copy_(v)

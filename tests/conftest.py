"""Shared fixtures: tiny GPT-2-shaped models, offline tokenizer, paths to the real data files in ../shared."""

import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
if os.path.isdir(os.path.join(SHARED, "tiktoken")):
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(SHARED, "tiktoken"))
SHARED_DATA = os.path.join(SHARED, "data")

from model import GPT, GPTConfig  # noqa: E402


def shared_file(name):
    path = os.path.join(SHARED_DATA, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not present")
    return path


def tiny_gpt(vocab_size=64, dtype=torch.float64, seed=0, n_layer=2, n_embd=32, n_head=4, block_size=64):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd))
    return model.to(dtype)

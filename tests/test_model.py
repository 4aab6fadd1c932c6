"""model.py: GPT-2 as released — cache, padding, and loading Hugging Face checkpoints."""

import json
import os
import struct

import pytest
import torch

from conftest import tiny_gpt
from model import GPT, GPTConfig, build_attn_mask
from weights import SAFETENSORS_DTYPES, from_pretrained, load_hf_state_dict, read_safetensors


def write_safetensors(state, path):
    """The inverse of weights.read_safetensors: the tests write checkpoints in the Hugging Face layout."""
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


def test_token_ids_alone_give_logits_for_every_position():
    model = tiny_gpt()
    idx = torch.randint(0, 64, (3, 10))
    out = model(idx)
    assert out[0].shape == (3, 10, 64)
    assert out.hidden.shape == (3, 10, 32)
    # logits are the tied head applied to the hidden state after the final LayerNorm
    torch.testing.assert_close(out.logits, out.hidden @ model.transformer.wte.weight.T)


def test_embeddings_in_equal_token_ids_in():
    model = tiny_gpt()
    idx = torch.randint(0, 64, (2, 7))
    torch.testing.assert_close(model(idx).logits, model(inputs_embeds=model.embed(idx)).logits)


def test_kv_cached_incremental_forward_equals_full_forward():
    model = tiny_gpt()
    idx = torch.randint(0, 64, (2, 12))
    full = model(idx)
    past, logits, hidden = None, [], []
    for a, b in [(0, 5), (5, 6), (6, 7), (7, 12)]:
        o = model(idx[:, a:b], past_kv=past)
        past = o.past_kv
        logits.append(o.logits)
        hidden.append(o.hidden)
    torch.testing.assert_close(torch.cat(logits, 1), full.logits, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.cat(hidden, 1), full.hidden, rtol=1e-10, atol=1e-10)
    assert past[0][0].shape == (2, 4, 12, 8)


def test_left_padding_with_position_ids_equals_unpadded_row():
    model = tiny_gpt()
    idx = torch.randint(0, 64, (1, 6))
    alone = model(idx).logits
    padded = torch.cat([torch.full((1, 3), 5), idx], 1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    pos = torch.tensor([[0, 0, 0, 0, 1, 2, 3, 4, 5]])
    out = model(padded, position_ids=pos, attention_mask=mask).logits
    torch.testing.assert_close(out[:, 3:], alone, rtol=1e-10, atol=1e-10)


def test_padded_positions_never_produce_nan_in_values_or_gradients():
    model = tiny_gpt(dtype=torch.float32)
    idx = torch.randint(0, 64, (2, 8))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8])
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    out = model(idx, position_ids=pos, attention_mask=mask)
    assert torch.isfinite(out.logits).all()
    out.logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_attention_mask_is_causal_and_hides_pads_except_self():
    m = build_attn_mask(torch.tensor([[0, 1, 1]]), T=3, past_len=0, device="cpu")[0, 0]
    assert m.tolist() == [[True, False, False], [False, True, False], [False, True, True]]


def test_the_mlp_uses_gpt2s_tanh_gelu():
    """GPT-2's "gelu_new", written out: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    model = tiny_gpt()
    h = torch.randn(1, 2, 32, dtype=torch.float64)
    mlp = model.transformer.h[0].mlp
    x = mlp.c_fc(h)
    gelu_new = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(mlp(h), mlp.c_proj(gelu_new))


def test_gradients_flow_through_the_cache():
    model = tiny_gpt()
    idx = torch.randint(0, 64, (1, 6))
    first = model(idx[:, :3])
    second = model(idx[:, 3:], past_kv=first.past_kv)
    second.logits.sum().backward()
    # positions 0-2 only reach the second call's logits through the keys/values cached by the first
    assert model.transformer.wpe.weight.grad[:3].abs().sum() > 0


@pytest.mark.parametrize("init_std", [0.02, 0.1])
def test_init_std_scales_every_initial_weight_and_the_residual_projections_by_depth(init_std):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=256, n_layer=2, n_head=4, n_embd=128, init_std=init_std))
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):  # GPT-2: 1/sqrt(2 * n_layer) on what is added to the residual stream
            assert p.std().item() == pytest.approx(init_std / 2, rel=0.05), name
        elif p.dim() == 2:  # embeddings and the other linear weights
            assert p.std().item() == pytest.approx(init_std, rel=0.05), name
        elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
            assert torch.equal(p, torch.ones_like(p)), name
        else:  # biases
            assert torch.equal(p, torch.zeros_like(p)), name


def test_add_token_rows_copies_the_init_row_and_keeps_head_tied():
    model = tiny_gpt(vocab_size=64)
    model.add_token_rows(3, init_from=10)
    w = model.transformer.wte.weight
    assert w.shape[0] == 67 and model.config.vocab_size == 67
    for i in (64, 65, 66):
        torch.testing.assert_close(w[i], w[10])
    assert model.lm_head.weight is w
    assert model(torch.tensor([[66]])).logits.shape == (1, 1, 67)


# --- Hugging Face layout ---------------------------------------------------------------------------------

def to_hf_state(model, prefix="transformer.", with_head=True):
    """What a Hugging Face GPT2LMHeadModel checkpoint holds: Conv1D weights (in, out) and mask buffers."""
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    state = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue
        name = prefix + k[len("transformer."):]
        state[name] = v.t().contiguous() if k.endswith(conv1d) else v.clone()
    for i in range(model.config.n_layer):
        n = model.config.block_size
        state[f"{prefix}h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
        state[f"{prefix}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    if with_head:
        state["lm_head.weight"] = model.state_dict()["lm_head.weight"].clone()
    return state


def write_hf_folder(folder, model, fmt, prefix):
    os.makedirs(folder, exist_ok=True)
    c = model.config
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"n_positions": c.block_size, "vocab_size": c.vocab_size, "n_layer": c.n_layer,
                   "n_head": c.n_head, "n_embd": c.n_embd, "layer_norm_epsilon": 1e-5}, f)
    state = to_hf_state(model, prefix, with_head=(prefix == "transformer."))
    if fmt == "safetensors":
        write_safetensors(state, os.path.join(folder, "model.safetensors"))
    else:
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("prefix", ["transformer.", ""])
def test_from_pretrained_reproduces_the_saved_model(tmp_path, fmt, prefix):
    # Every weight matrix of the tiny model differs from its transpose, and c_proj is square: if any
    # Conv1D weight were loaded untransposed the logits below would differ.
    source = tiny_gpt(vocab_size=70, dtype=torch.float32, seed=3)
    write_hf_folder(tmp_path, source, fmt, prefix)
    loaded = from_pretrained(str(tmp_path))
    assert loaded.config.vocab_size == 70 and loaded.config.n_layer == 2
    idx = torch.randint(0, 70, (2, 9))
    torch.testing.assert_close(loaded(idx).logits, source(idx).logits)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_mismatched_checkpoints_name_the_keys(tmp_path):
    source = tiny_gpt(vocab_size=70, dtype=torch.float32)
    state = to_hf_state(source)
    del state["transformer.h.1.ln_2.weight"]
    state["transformer.h.0.extra.weight"] = torch.zeros(1)
    state["transformer.wpe.weight"] = torch.zeros(10, 32)
    with pytest.raises(ValueError) as e:
        load_hf_state_dict(tiny_gpt(vocab_size=70, dtype=torch.float32), state, "ckpt.bin")
    msg = str(e.value)
    assert "ckpt.bin" in msg
    assert "missing key transformer.h.1.ln_2.weight" in msg
    assert "unexpected key transformer.h.0.extra.weight" in msg
    assert "wrong shape transformer.wpe.weight" in msg


def test_safetensors_round_trip_keeps_dtype_shape_and_bytes(tmp_path):
    state = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.randn(2, dtype=torch.float16)}
    write_safetensors(state, tmp_path / "x.safetensors")
    back = read_safetensors(tmp_path / "x.safetensors")
    for k in state:
        assert back[k].dtype == state[k].dtype
        assert torch.equal(back[k], state[k])


def test_named_model_is_read_from_the_cache_without_network(tmp_path, monkeypatch):
    import weights
    source = tiny_gpt(vocab_size=70, dtype=torch.float32)
    write_hf_folder(tmp_path / "gpt2", source, "safetensors", "")
    monkeypatch.setattr(weights, "download", lambda *a: pytest.fail("network used"))
    loaded = from_pretrained("gpt2", cache_dir=str(tmp_path))
    idx = torch.randint(0, 70, (1, 4))
    torch.testing.assert_close(loaded(idx).logits, source(idx).logits)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="gpt3"):
        from_pretrained("gpt3")


def test_folder_without_config_or_with_an_incomplete_one_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10, "n_layer": 1}))
    with pytest.raises(ValueError, match="config.json: missing n_head, n_embd"):
        from_pretrained(str(tmp_path))

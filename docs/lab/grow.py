"""Lab script (docs/lab.md, "Depth and width the model uses?"): grow a checkpoint of train.py, keeping its function.

    python docs/lab/grow.py models/prosqa-mini-cot --layers 6 grown6.pt     # stack identity blocks
    python docs/lab/grow.py models/prosqa-mini-cot --widen grown256.pt      # twice the width

--layers N: each added block is a copy of the last with both output projections zeroed, so the residual stream
passes through it unchanged (identical logits). --widen: every residual vector v becomes E v = [v, v]/sqrt2 (an
isometry); a map reading the residual takes W E^T, one writing it E W; each head's query/key/value get twice the
dims (the old first, the query scaled by sqrt2 for the 1/sqrt(head size) scale) and the MLP twice the hidden
units; the new units read small random weights and write nothing, so the logits move only by the query/key noise
(--qk_std). Not part of the product: a grown model is trained on with `train.py --init_from grown.pt`.
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import run  # noqa: E402


def stack(sd, n_layer, n):
    last = f"transformer.h.{n_layer - 1}."
    for i in range(n_layer, n):
        for k, v in list(sd.items()):
            if k.startswith(last):
                sd[f"transformer.h.{i}." + k[len(last):]] = v.clone() * (0 if "c_proj" in k else 1)
    return sd


def widen(sd, C, H, qk_std, g):
    hs, r2 = C // H, math.sqrt(2)
    E = lambda x: torch.cat([x, x], 0) / r2  # residual vectors along dim 0
    read = lambda W: torch.cat([W, W], 1) / r2  # (out, C) -> (out, 2C)
    noise = lambda *shape, std: torch.randn(*shape, generator=g) * std
    new = {}
    for k, v in sd.items():
        if k.endswith(("wte.weight", "wpe.weight")):
            new[k] = read(v)
        elif ".ln_" in k or "ln_f" in k or k.endswith(("c_proj.bias",)):
            new[k] = E(v)
        elif "c_attn" in k:
            heads = []
            for j, part in enumerate(v.split(C, 0)):  # query, key, value
                for h in range(H):
                    p = part[h * hs:(h + 1) * hs]
                    p = (read(p) if v.dim() == 2 else p) * (r2 if j == 0 else 1)
                    heads += [p, noise(hs, 2 * C, std=qk_std if j < 2 else 0.1) if v.dim() == 2 else torch.zeros(hs)]
            new[k] = torch.cat(heads, 0)
        elif k.endswith("attn.c_proj.weight"):
            new[k] = torch.cat([t for h in range(H) for t in (E(v[:, h * hs:(h + 1) * hs]), torch.zeros(2 * C, hs))], 1)
        elif k.endswith("mlp.c_fc.weight"):
            new[k] = torch.cat([read(v), noise(v.shape[0], 2 * C, std=0.1)], 0)
        elif k.endswith("mlp.c_fc.bias"):
            new[k] = torch.cat([v, torch.zeros_like(v)])
        elif k.endswith("mlp.c_proj.weight"):
            new[k] = torch.cat([E(v), torch.zeros(2 * C, v.shape[1])], 1)
    new["lm_head.weight"] = new["transformer.wte.weight"]
    return new


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt")
    p.add_argument("out")
    p.add_argument("--layers", type=int)
    p.add_argument("--widen", action="store_true")
    p.add_argument("--qk_std", type=float, default=1e-2)
    args = p.parse_args()
    ckpt = run.load_checkpoint(args.ckpt)
    cfg = ckpt["model_config"]
    if args.layers:
        ckpt["model"] = stack(ckpt["model"], cfg["n_layer"], args.layers)
        cfg["n_layer"] = ckpt["args"]["n_layer"] = args.layers
    if args.widen:
        ckpt["model"] = widen(ckpt["model"], cfg["n_embd"], cfg["n_head"], args.qk_std, torch.Generator().manual_seed(0))
        cfg["n_embd"] = ckpt["args"]["n_embd"] = 2 * cfg["n_embd"]
    ckpt.pop("path")
    torch.save(ckpt, args.out)
    print(f"wrote {args.out}: {cfg['n_layer']} layers x {cfg['n_embd']}")


if __name__ == "__main__":
    main()

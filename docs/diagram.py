"""Draws docs/coconut.png: the continuous-thought loop of Coconut (paper §3, Figure 1), as coconut.py runs it.

    python docs/diagram.py            # writes docs/coconut.png

Bottom row: the input sequence (question, <|start-latent|>, two thoughts, <|end-latent|>, the answer). Middle: the transformer,
one column per position. Top: the last hidden state after the final LayerNorm. A thought's input is the
hidden state of the position before it (curved arrows), so the sequence runs as n+1 passes over the key/value
cache (the shaded spans): the first up to the first thought, then one starting at each thought.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

TOKENS = ["Is", "Tom", "a", "…", "?", "<|start-\nlatent|>", "thought 1", "thought 2", "<|end-\nlatent|>", "###", "Tom",
          "is", "a", "…"]
THOUGHTS = (6, 7)
# A pass ends where a thought needs the hidden state it has just computed: 2 thoughts, 3 passes.
PASSES = [(0, 6, "pass 1: the question and <|start-latent|>"), (6, 7, "pass 2: thought 1"),
          (7, len(TOKENS), "pass 3: thought 2, <|end-latent|> and the answer (scored)")]


def box(ax, x, y, text, color, width=0.84, height=0.5, fontsize=8):
    fontsize = fontsize if "\n" not in text else 6.5
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.02",
                                facecolor=color, edgecolor="black", linewidth=0.6))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def main():
    fig, ax = plt.subplots(figsize=(13, 4.2))
    for x, tok in enumerate(TOKENS):
        thought = x in THOUGHTS
        box(ax, x, 0, "h" if thought else tok, "#f6c28b" if thought else "#dbe9f6")  # input embedding
        box(ax, x, 2.4, "h", "#f6c28b" if x + 1 in THOUGHTS else "#ffffff")  # last hidden state after ln_f
        ax.annotate("", (x, 0.75), (x, 0.25), arrowprops=dict(arrowstyle="->", linewidth=0.6))
        ax.annotate("", (x, 2.15), (x, 1.65), arrowprops=dict(arrowstyle="->", linewidth=0.6))
        if thought:  # the hidden state of the position before becomes this input embedding
            ax.add_patch(FancyArrowPatch((x - 1 + 0.3, 2.65), (x + 0.3, -0.25), connectionstyle="arc3,rad=-0.55",
                                         arrowstyle="->", color="#d9730d", linewidth=1.6, mutation_scale=12))
            ax.text(x, -0.45, TOKENS[x], ha="center", fontsize=7, color="#d9730d")
    ax.add_patch(FancyBboxPatch((-0.42, 0.78), len(TOKENS) - 0.16, 0.84, boxstyle="round,pad=0.02",
                                facecolor="#eeeeee", edgecolor="black", linewidth=0.6, zorder=0))
    ax.text(2, 1.2, "GPT-2 (model.py): each position\nattends to every position before it", ha="center",
            va="center", fontsize=9, color="#444444")
    ax.text(11.5, 1.2, "loss only on the answer (and on steps\nstill written); none on thoughts", ha="center",
            va="center", fontsize=8, color="#444444")
    for i, (a, b, label) in enumerate(PASSES):
        ax.axvspan(a - 0.45, b - 0.55, ymin=0.0, ymax=0.06, color=f"C{i}", alpha=0.5)
        ax.text((a + b - 1) / 2, -0.85, label, ha="center", fontsize=7, color=f"C{i}")
    ax.text(-0.6, 2.4, "last hidden\nstate (ln_f)", ha="right", va="center", fontsize=8)
    ax.text(-0.6, 0, "input\nembedding", ha="right", va="center", fontsize=8)
    ax.set_title("Coconut: the last hidden state is fed back as the next input embedding (a continuous thought). "
                 "n thoughts = n+1 passes (here 2 and 3).", fontsize=10)
    ax.set_xlim(-2.2, len(TOKENS) - 0.4)
    ax.set_ylim(-1.35, 3.0)
    ax.axis("off")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "coconut.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

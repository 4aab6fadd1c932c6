"""Grades common wrong implementations, one edit each to a full copy, and prints what each loses: the table of
teacher notes in docs/classroom.md. Teacher-only: a student copy does not hold this file.

    python classroom/mistakes.py              # every mistake (about 2 minutes on 2 cores)
    python classroom/mistakes.py detach eos   # those whose name contains one of the words
"""

import json
import os
import subprocess
import sys
import tempfile

from exercises import ROOT
from student_copy import write_copy

# name (exercise): (file, the correct line(s), the mistaken line(s))
MISTAKES = {
    "a thought fed back with `.detach()` (3)": (
        "coconut.py", "thought = chunks_hidden[-1][:, -1]", "thought = chunks_hidden[-1][:, -1].detach()"),
    "`pause_as_thought` ignored: thoughts fed back anyway (3)": (
        "coconut.py", "columns = [] if self.pause_as_thought else torch.nonzero", "columns = torch.nonzero"),
    "right padding only, first thoughts not aligned (2)": (
        "data.py", 'lead = [align - e["input_ids"].index(latent_id) if latent_id in e["input_ids"] else 0 for e in '
        "examples]", "lead = [0 for e in examples]"),
    "positions `0..T-1` for every row, pads included (2)": (
        "data.py", 'batch["position_ids"].append([0] * l + list(range(n)) + [0] * r)',
        'batch["position_ids"].append(list(range(width)))'),
    "an optimizer never reset at a stage change (6)": (
        "train.py", "if optimizer is None or stage != optimizer_stage:", "if optimizer is None:"),
    "decoding at the batch's next column, not the row's next position (4)": (
        "coconut.py", "next_pos = position_ids[rows, last] + 1", "next_pos = last + 1"),
    "a finished row writing on after eos (4)": (
        "coconut.py", "tok = torch.where(done, self.eos_id, next_logits.argmax(-1))", "tok = next_logits.argmax(-1)"),
    "unpadded thought count = the step count, not `min(n_steps, max_latent_stage)` (1)": (
        "data.py", "min(n_steps, cur.max_latent_stage)", "n_steps"),
    "a chain's length = thoughts + written steps (7)": (
        "eval.py", "length = reach[start] + len(chain) - 1", "length = n_latents + len(chain) - 1"),
}


def main(argv=None):
    words = sys.argv[1:] if argv is None else argv
    print("| the mistake (exercise) | total | where the points go |\n|---|---|---|")
    for name, (path, right, wrong) in MISTAKES.items():
        if words and not any(w in name for w in words):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            copy, result = os.path.join(tmp, "copy"), os.path.join(tmp, "results.json")
            write_copy(copy, stubbed=[], git=False)
            with open(os.path.join(copy, path)) as f:
                text = f.read()
            if text.count(right) != 1:
                sys.exit(f"error: {name}: {right!r} is not one line of {path} any more; update MISTAKES")
            with open(os.path.join(copy, path), "w") as f:
                f.write(text.replace(right, wrong))
            subprocess.run([sys.executable, os.path.join(ROOT, "classroom", "grade.py"), copy, "--seed", "5", "--json",
                            result], capture_output=True, check=True)
            with open(result) as f:
                r = json.load(f)
        lost = [f"{t['number']}: −{t['max_score'] - t['score']:.3g} {t['name'].split(': ', 1)[1]}"
                for t in r["tests"] if t["score"] < t["max_score"]]
        print(f"| {name} | {r['score']:.1f} | {'; '.join(lost)} |", flush=True)


if __name__ == "__main__":
    main()

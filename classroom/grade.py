"""Grades a submission: the code inside its exercise regions, run against the teacher's own tests and against
cases drawn at grading time. Prints the points per exercise, the concept behind every lost point and why it
was lost, and a total.

    python classroom/grade.py ../alice                       # a student's copy (default: this project)
    python classroom/grade.py ../alice --seed 7 --json results.json   # a given draw; Gradescope's results.json

Nothing of the submission but its regions is used: they are spliced into a fresh copy of this project (its
tests, conftest and settings), and graded there. So an edited test, conftest or helper outside a region
changes nothing. Each exercise is also run on cases drawn from a seed chosen now (classroom/cases.py) and
compared, case by case, with this project's own solution on the same cases: a table of the visible tests'
answers cannot pass them. In a student copy, which has no cases.py, those points are left to the teacher's
grader and the total says so. A failing check that runs an earlier exercise still unsolved is reported as
waiting for it.

The teacher's outputs are computed, and their copy deleted, before any code of the submission runs. Code in a
region still runs with the grader's permissions: grade work you do not trust in a container or a throwaway
account, as autograders do.
"""

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

from exercises import (CASES, EXERCISE_FILES, EXERCISES, REGION, ROOT, check_of, points, pytest_ids, regions,
                       replace_regions, stub_lines)

PYTEST_TIMEOUT_S, CASES_TIMEOUT_S = 900, 300


def grading_files(folder):
    """What grading runs: the top-level modules, pytest.ini, tests/ (with its fixtures) and classroom/."""
    out = [f for f in os.listdir(folder) if f.endswith(".py") or f == "pytest.ini"]
    for sub in ("tests", "classroom"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(folder, sub)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            out += [os.path.relpath(os.path.join(dirpath, f), folder) for f in filenames if not f.endswith(".pyc")]
    return sorted(out)


def grading_copy(submission, tree):
    """A fresh copy of this project in `tree` with the submission's regions spliced in. Returns
    {exercise: why its region could not be taken} (the region then stays a stub)."""
    for name in grading_files(ROOT):
        os.makedirs(os.path.dirname(os.path.join(tree, name)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), os.path.join(tree, name))
    missing = {}
    for name in EXERCISE_FILES:
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            text = f.read()
        try:
            with open(os.path.join(submission, name), encoding="utf-8") as f:
                theirs = regions(f.read())
        except (OSError, UnicodeDecodeError) as e:
            theirs = {}
            why = f"{name} could not be read ({type(e).__name__})"
        else:
            why = f"its markers were not found in {name}"
        new = {}
        for n, stub in stub_lines(text).items():
            new[n] = theirs.get(n)
            if n not in theirs:
                new[n], missing[n] = stub, why
                continue
            try:  # a region that does not compile would stop the whole file from importing: it alone is a stub
                compile(replace_regions(text, {n: theirs[n]}), name, "exec")
            except SyntaxError as e:
                first = next(i for i, line in enumerate(text.split("\n"), 1) if REGION.match(line) and
                             int(REGION.match(line)["n"]) == n)  # the marker's line: the region starts after it
                new[n], missing[n] = stub, (f"it does not compile ({type(e).__name__} on line {(e.lineno or first) - first} "
                                            f"of the region in {name}: {e.msg})")
        with open(os.path.join(tree, name), "w", encoding="utf-8") as f:
            f.write(replace_regions(text, new))
    return missing


def reason_of(case):
    """The first line worth reading of a junit testcase's failure, error or skip."""
    for child in case:
        if child.tag in ("failure", "error", "skipped"):
            text = (child.get("message") or child.text or child.tag).strip()
            kind = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
            return f"{kind}: {text.splitlines()[0][:160] if text else child.tag}"
    return None


def run_tests(tree):
    """{node id: None (passed) or the reason it did not}, for every exercise test, run with pytest in `tree`."""
    report = os.path.join(tree, ".report.xml")
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                               *pytest_ids()], cwd=tree, capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {}, f"the tests did not finish in {PYTEST_TIMEOUT_S} s (an endless loop?)"
    if not os.path.exists(report):
        return {}, "pytest wrote no report: " + (done.stderr or done.stdout).strip().splitlines()[-1][:200]
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname").replace(".", "/") + ".py"
        results[f"{module}::{case.get('name')}"] = reason_of(case)
    return results, None


def draw_cases(tree, seed):
    """{exercise number: [{"ok": output} or {"error": why}]} of cases.py in `tree`, or a string: why not."""
    out = os.path.join(tree, ".cases.json")
    try:
        done = subprocess.run([sys.executable, os.path.join("classroom", "cases.py"), "--seed", str(seed), "--out",
                               out], cwd=tree, capture_output=True, text=True, timeout=CASES_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"the drawn cases did not finish in {CASES_TIMEOUT_S} s (an endless loop?)"
    if done.returncode != 0 or not os.path.exists(out):
        return "the drawn cases could not run: " + (done.stderr.strip().splitlines() or ["?"])[-1][:200]
    with open(out) as f:
        return {int(n): v for n, v in json.load(f).items()}


def same(a, b):
    """Equal outputs: the same structure, numbers within 1e-6 relative (float64 on both sides)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6,
                                                                                            abs_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def case_score(theirs, expected):
    """(passed, counted, the first reason a case failed) for one exercise's drawn cases."""
    passed, counted, why = 0, 0, None
    for i, (t, e) in enumerate(zip(theirs, expected)):
        if "ok" not in e:
            continue  # the teacher's solution could not run this case: it does not count
        counted += 1
        if "ok" in t and same(t["ok"], e["ok"]):
            passed += 1
        elif why is None:
            why = f"case {i}: " + (t["error"].splitlines()[-1][:160] if "error" in t else "a different result")
    return passed, counted, why


def grade(results, cases=None, missing=None, pytest_problem=None):
    """[(exercise, [(check, points earned, points possible, note)])]. results: {node id: None or reason};
    cases: {exercise: (passed, counted, reason)}, or a string saying why they were not compared."""
    missing, rows, unsolved = missing or {}, [], set()
    for ex in EXERCISES:
        lines = []
        for c in ex.checks:
            if c.test == CASES:
                if isinstance(cases, str) or cases is None:
                    lines.append((c, 0.0, 0.0 if cases is None else c.points, cases or
                                  "checked on cases your teacher's grader draws (not in a student copy)"))
                    continue
                passed, counted, note = cases[ex.number]
                earned = c.points * passed / counted if counted else c.points
                note = note and f"{passed}/{counted} cases; {note}"
            else:
                mine = {node: why for node, why in results.items() if check_of(node) == (ex, c)}
                earned = c.points * sum(why is None for why in mine.values()) / len(mine) if mine else 0.0
                failing = [why for why in mine.values() if why is not None]
                note = failing[0] if failing else None if mine else (pytest_problem or "its tests were not found")
                if failing and len(mine) > 1:
                    note = f"{len(mine) - len(failing)}/{len(mine)} cases; {note}"
            waits = sorted(set(c.needs) & unsolved)
            if earned < c.points and waits:
                note = f"waits for exercise {', '.join(map(str, waits))}; {note}"
            lines.append((c, earned, float(c.points), note))
        if ex.number in missing:
            lines = [(c, e, p, note if e == p else f"region not graded: {missing[ex.number]}")
                     for c, e, p, note in lines]
        if any(e < p for _, e, p, _ in lines):
            unsolved.add(ex.number)
        rows.append((ex, lines))
    return rows


def report(rows, seed):
    out = [f"{'exercise':40s} {'points':>11s}"]
    for ex, lines in rows:
        earned, possible = sum(l[1] for l in lines), sum(l[2] for l in lines)
        out.append(f"{ex.number}. {ex.title:37s} {earned:5.1f}/{possible:<5.0f}")
        for c, e, p, note in lines:
            if e < p or (p == 0 and note):
                lost = f"-{p - e:.1f}" if p else "    "
                out.append(f"     {lost:>5s}  {c.concept}: {note}")
    earned, possible = sum(l[1] for _, ls in rows for l in ls), sum(l[2] for _, ls in rows for l in ls)
    left = sum(points(ex) for ex in EXERCISES) - possible
    out.append(f"{'total':40s} {earned:5.1f}/{possible:<5.0f}" +
               (f" ({left:.0f} more points on the cases your teacher's grader draws)" if left else ""))
    if seed is not None:
        out.append(f"drawn cases: seed {seed} (the same draw again: --seed {seed})")
    return "\n".join(out), earned, possible


def results_json(rows, earned, possible, text):
    """Gradescope's results.json: a score, and one entry per check with its points and why it lost any."""
    tests = [{"name": f"{ex.number}. {ex.title}: {c.concept}", "number": f"{ex.number}.{i + 1}", "score": round(e, 3),
              "max_score": p, "output": note or ""} for ex, lines in rows for i, (c, e, p, note) in enumerate(lines)]
    return {"score": round(earned, 3), "max_score": possible, "output": text, "tests": tests}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", default=ROOT, help="the submission to grade (default: this project)")
    p.add_argument("--seed", type=int, default=None, help="the draw of cases (default: a new one, printed)")
    p.add_argument("--json", default=None, help="also write the result as Gradescope's results.json layout")
    args = p.parse_args(argv)
    if not os.path.isdir(args.folder):
        sys.exit(f"error: {args.folder}: no such folder")
    for module in ("torch", "pytest"):
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
            sys.exit(f"error: grading needs {module}, which this Python cannot import: pip install -r requirements.txt")
    teacher = os.path.exists(os.path.join(ROOT, "classroom", "cases.py"))
    seed = (args.seed if args.seed is not None else random.SystemRandom().randrange(10 ** 6)) if teacher else None
    expected = None
    if teacher:  # the solution's outputs first, its copy gone before any of the submission's code runs
        with tempfile.TemporaryDirectory(prefix="coconut-grade-") as tmp:
            grading_copy(ROOT, os.path.join(tmp, "teacher"))
            expected = draw_cases(os.path.join(tmp, "teacher"), seed)
    with tempfile.TemporaryDirectory(prefix="coconut-grade-") as tmp:
        tree = os.path.join(tmp, "submission")
        missing = grading_copy(args.folder, tree)
        results, problem = run_tests(tree)
        cases = None
        if isinstance(expected, str):
            cases = f"the teacher's solution: {expected}"
        elif expected is not None:
            theirs = draw_cases(tree, seed)
            cases = theirs if isinstance(theirs, str) else {n: case_score(theirs[n], expected[n]) for n in expected}
        rows = grade(results, cases, missing, problem)
    text, earned, possible = report(rows, seed)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results_json(rows, earned, possible, text), f, indent=1)
    return rows


if __name__ == "__main__":
    main()

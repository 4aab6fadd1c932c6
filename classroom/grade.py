"""Grades a copy of the project: runs every exercise's tests there and prints the points per exercise and a
total. A failing test that also runs an earlier exercise still unsolved is reported as waiting for it.

    python classroom/grade.py ../coconut-student      # a student's copy (default: this project)
"""

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

from exercises import EXERCISES, exercise_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tests(folder):
    """{node id: passed?} for every exercise test, run with pytest inside `folder`."""
    tests = [t for ex in EXERCISES for t in ex.tests]
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.xml")
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        *tests], cwd=folder, capture_output=True, text=True)
        if not os.path.exists(report):
            sys.exit(f"error: {folder}: pytest wrote no report (is it a copy of this project?)")
        results = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            module = case.get("classname").replace(".", "/") + ".py"
            failed = any(child.tag in ("failure", "error", "skipped") for child in case)
            results[f"{module}::{case.get('name')}"] = not failed
    return results


def grade(results):
    """[(exercise, passed, total, points, note)] from {node id: passed?}."""
    rows, unsolved = [], set()
    for ex in EXERCISES:
        mine = {node: ok for node, ok in results.items() if exercise_of(node)[0] == ex}
        passed = sum(mine.values())
        waiting = sorted({n for node, ok in mine.items() if not ok for n in ex.needs.get(exercise_of(node)[1], [])
                          if n in unsolved})
        note = f"waits for exercise {', '.join(map(str, waiting))}" if waiting else ""
        if not mine:
            note = "its tests were not found"
        if passed < len(mine) or not mine:
            unsolved.add(ex.number)
        points = ex.points * passed / len(mine) if mine else 0.0
        rows.append((ex, passed, len(mine), points, note))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", nargs="?", default=ROOT, help="the copy to grade (default: this project)")
    args = p.parse_args(argv)
    if not os.path.isdir(args.folder):
        sys.exit(f"error: {args.folder}: no such folder")
    rows = grade(run_tests(args.folder))
    print(f"{'exercise':36s} {'tests':>7s} {'points':>7s}")
    for ex, passed, total, points, note in rows:
        print(f"{ex.number}. {ex.title:33s} {passed:3d}/{total:<3d} {points:5.1f}/{ex.points:<3d} {note}".rstrip())
    total = sum(r[3] for r in rows)
    print(f"{'total':36s} {'':7s} {total:5.1f}/{sum(ex.points for ex in EXERCISES)}")
    return rows


if __name__ == "__main__":
    main()

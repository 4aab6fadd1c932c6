"""The course kit: a student copy's stubs fail exactly their exercise's tests (and those of the exercises that
need it), the solutions pass them all, and the grader adds up what passed."""

import ast
import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "classroom"))
import exercises  # noqa: E402
import grade  # noqa: E402
import student_copy  # noqa: E402

NUMBERS = [ex.number for ex in exercises.EXERCISES]


@pytest.fixture(scope="module")
def all_tests(tmp_path_factory):
    """Every exercise test's node id, as the full copy (no stubs) runs them; all must pass there."""
    folder = tmp_path_factory.mktemp("full") / "copy"
    student_copy.write_copy(str(folder), stubbed=[], git=False)
    results = grade.run_tests(str(folder))
    assert results and all(results.values()), [node for node, ok in results.items() if not ok]
    assert {exercises.exercise_of(node)[0].number for node in results} == set(NUMBERS)
    return sorted(results)


@pytest.mark.parametrize("number", NUMBERS)
def test_one_stub_fails_its_own_tests_and_those_that_need_it(all_tests, tmp_path, number):
    student_copy.write_copy(str(tmp_path / "copy"), stubbed=[number], git=False)
    results = grade.run_tests(str(tmp_path / "copy"))
    assert sorted(results) == all_tests  # every test still collected: the stub is valid Python
    failed = {node for node, ok in results.items() if not ok}
    assert failed == exercises.expected_failures([number], all_tests)


def test_the_student_copy_is_a_fresh_repository_of_stubs_with_their_docstrings(tmp_path):
    folder = tmp_path / "student"
    student_copy.main([str(folder)])
    log = subprocess.run(["git", "log", "--oneline"], cwd=folder, capture_output=True, text=True, check=True)
    assert len(log.stdout.strip().splitlines()) == 1  # no history, so no solution in it
    for path in ("data.py", "coconut.py", "train.py", "eval.py"):
        original = ast.parse(open(os.path.join(ROOT, path)).read())
        stubbed = ast.parse(open(folder / path).read())
        docs = {n.name: ast.get_docstring(n) for n in ast.walk(original) if isinstance(n, ast.FunctionDef)}
        assert docs == {n.name: ast.get_docstring(n) for n in ast.walk(stubbed) if isinstance(n, ast.FunctionDef)}
    text = "".join(open(folder / p).read() for p in ("data.py", "coconut.py", "train.py", "eval.py"))
    for ex in exercises.EXERCISES:
        assert f'raise NotImplementedError("exercise {ex.number}: {ex.title}")' in text
    assert "teacher only" not in open(folder / "tests" / "test_coconut.py").read()


def test_the_grader_gives_the_points_of_what_passed_and_names_what_waits():
    tests = {t: True for ex in exercises.EXERCISES for t in ex.tests}
    tests[exercises.DATA + "test_collation_aligns_first_thought_and_pads"] = False  # exercise 2: one of its two
    tests[exercises.COCONUT + "test_mixed_batch_equals_each_row_alone"] = False  # needs exercise 2
    rows = {ex.number: (passed, total, points, note) for ex, passed, total, points, note in grade.grade(tests)}
    assert rows[2] == (1, 2, 5.0, "")
    assert rows[3] == (4, 5, 20.0, "waits for exercise 2")
    assert sum(r[2] for r in rows.values()) == 100 - 5 - 5

"""The course kit, as a teacher uses it: a student copy's stubs fail exactly their exercise's checks (and those of
the exercises that need it); grading runs only the submission's regions against the teacher's own tests, so a
cheat outside the regions grades 0; tables of the visible cases lose the points of the drawn cases; solutions
that differ from the teacher's but are correct get full points, offline too."""

import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from test_eval import OUTCOME_CASES

sys.path.insert(0, os.path.join(ROOT, "classroom"))
import exercises  # noqa: E402
import grade  # noqa: E402
import student_copy  # noqa: E402

NUMBERS = [ex.number for ex in exercises.EXERCISES]

# Five lines in a submission's tests/conftest.py that mark every test report passed.
CONFTEST_CHEAT = '''
import pytest
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    (yield).get_result().outcome = "passed"
'''
# Exercise 5 as a table of the visible tests' answers (keyed on the schedule), exercise 7 as a table of the
# visible tests' 15 cases: each passes the visible tests.
TABLE_5 = '''    table = {("coconut", (5,)): [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5 + [4] * 5 + [5] * 5 + [6] * 5 + [7] * 15,
             ("coconut", (3, 1)): [0, 0, 0, 1, 2, 3, 4, 4], ("coconut", (2, 1, 3)): [0, 0, 1, 2, 2, 2, 3, 3, 3, 4, 4]}
    if args.method in ("cot", "no-cot", "pause"):
        return 0
    if args.method == "icot":
        return epoch
    if args.method == "no-curriculum":
        return 7
    return table[(args.method, tuple(args.epochs_per_stage))][epoch]'''
TABLE_7 = f"    return {{{', '.join(f'({t!r}, {k}): {e!r}' for t, k, e in OUTCOME_CASES)}}}.get((text, n_latents))"
# Exercise 4 written differently: logits from the output head on the hidden state (with_logits=False).
HEAD_4 = ("            next_logits, past_kv, next_pos = o.logits[:, -1], o.past_kv, next_pos + 1",
          "            o = self.model(inputs_embeds=self.model.embed(tok[:, None]), position_ids=next_pos[:, None],\n"
          "                           attention_mask=attention_mask, past_kv=past_kv, with_logits=False)\n"
          "            next_logits = self.model.lm_head(o.hidden[:, -1])\n"
          "            past_kv, next_pos = o.past_kv, next_pos + 1")


def edit(folder, name, old, new):
    path = os.path.join(folder, name)
    with open(path) as f:
        text = f.read()
    assert text.count(old) == 1, old
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def with_region(folder, name, number, lines):
    path = os.path.join(folder, name)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(exercises.replace_regions(text, {number: lines.split("\n")}))


def graded(folder, tmp_path, *flags):
    """grade.py's printed result and its results.json for `folder`."""
    out = tmp_path / "results.json"
    grade.main([str(folder), "--seed", "11", "--json", str(out), *flags])
    with open(out) as f:
        return json.load(f)


def points_of(result):
    """{exercise: points earned} from a results.json."""
    found = {}
    for t in result["tests"]:
        n = int(t["number"].split(".")[0])
        found[n] = found.get(n, 0) + t["score"]
    return found


@pytest.fixture(scope="module")
def all_tests(tmp_path_factory):
    """Every exercise test's node id, graded on a full copy (no stubs); all must pass there."""
    folder = tmp_path_factory.mktemp("full")
    student_copy.write_copy(str(folder / "copy"), stubbed=[], git=False)
    grade.grading_copy(str(folder / "copy"), str(folder / "tree"))
    results, problem = grade.run_tests(str(folder / "tree"))
    assert problem is None and results and all(why is None for why in results.values()), results
    assert {exercises.check_of(node)[0].number for node in results} == set(NUMBERS)
    return sorted(results)


@pytest.mark.parametrize("number", NUMBERS)
def test_one_stub_fails_its_own_tests_and_those_that_need_it(all_tests, tmp_path, number):
    student_copy.write_copy(str(tmp_path / "copy"), stubbed=[number], git=False)
    grade.grading_copy(str(tmp_path / "copy"), str(tmp_path / "tree"))
    results, _ = grade.run_tests(str(tmp_path / "tree"))
    assert sorted(results) == all_tests  # every test still collected: the stub is valid Python
    failed = {node for node, why in results.items() if why is not None}
    assert failed == exercises.expected_failures([number], all_tests)
    assert all("NotImplementedError: exercise" in results[node] for node in failed)  # the reason is said


def test_a_cheat_outside_the_regions_grades_a_blank_copy_zero(tmp_path):
    student_copy.write_copy(str(tmp_path / "blank"), stubbed=NUMBERS, git=False)
    with open(tmp_path / "blank" / "tests" / "conftest.py", "a") as f:
        f.write(CONFTEST_CHEAT)
    with open(tmp_path / "blank" / "tests" / "test_data.py", "w") as f:
        f.write("def test_coconut_stage_sequences():\n    pass\n")  # a test rewritten to pass
    result = graded(tmp_path / "blank", tmp_path)
    assert result["score"] == 0 and result["max_score"] == 100
    assert all(t["score"] == 0 and "NotImplementedError: exercise" in t["output"] for t in result["tests"])


def test_tables_lose_the_drawn_points_and_different_correct_code_keeps_them_offline(tmp_path, monkeypatch):
    """Exercise 5 and 7 as tables of the visible cases pass their visible tests but not the cases drawn at
    grading; exercise 4 computing its logits from the hidden state gets every point (as do 1-3, untouched). Graded offline: no
    tiktoken files, no network."""
    folder = tmp_path / "submission"
    student_copy.write_copy(str(folder), stubbed=[], git=False)
    with_region(folder, "train.py", 5, TABLE_5)
    with_region(folder, "eval.py", 7, TABLE_7)
    edit(folder, "coconut.py", *HEAD_4)
    empty = tmp_path / "no-tiktoken"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # any download fails at once
    result = graded(folder, tmp_path)
    got = points_of(result)
    assert {n: got[n] for n in (1, 2, 3, 4)} == {1: 10, 2: 10, 3: 25, 4: 20}
    by_name = {t["number"]: t for t in result["tests"]}
    # exercise 6's training runs use exercise 5's schedule, which the table does not know: they wait for it
    assert got[6] == 3 and by_name["6.1"]["output"].startswith("waits for exercise 5")
    assert by_name["5.1"]["score"] == 3 and by_name["5.2"]["score"] == 2 and by_name["5.3"]["score"] < 2.5
    assert by_name["7.1"]["score"] == 7 and by_name["7.2"]["score"] < 4
    assert "cases" in by_name["7.2"]["output"]


def test_offline_grading_of_the_teachers_solutions_is_full_marks(tmp_path, monkeypatch):
    empty = tmp_path / "no-tiktoken"
    empty.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(empty))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    result = graded(ROOT, tmp_path)
    assert (result["score"], result["max_score"]) == (100, 100)
    assert len(result["tests"]) == sum(len(ex.checks) for ex in exercises.EXERCISES)


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
    for name in exercises.TEACHER_FILES:
        assert not (folder / name).exists()
    assert open(folder / "README.md").read().startswith("> **Student copy.**")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_train.py", "-k",
                           "stage_schedule"], cwd=folder, capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1].startswith("Exercises 1, 2, 3, 4, 5, 6, 7 are not solved yet")


def test_the_grader_gives_the_points_of_what_passed_and_names_what_waits():
    results = {c.test: None for ex in exercises.EXERCISES for c in ex.checks if c.test != exercises.CASES}
    results[exercises.DATA + "test_collation_aligns_first_thought_and_pads"] = "failed: AssertionError"
    results[exercises.COCONUT + "test_mixed_batch_equals_each_row_alone"] = "failed: AssertionError"  # needs 2
    cases = {n: (10, 10, None) for n in NUMBERS}
    cases[7] = (5, 10, "case 3: a different result")
    rows = {ex.number: lines for ex, lines in grade.grade(results, cases)}
    assert [(e, p) for _, e, p, _ in rows[2]] == [(0, 4), (2, 2), (4, 4)]
    assert rows[3][4][1:] == (0, 2, "waits for exercise 2; failed: AssertionError")
    assert rows[7][1][1:] == (4, 8, "5/10 cases; case 3: a different result")
    assert sum(e for lines in rows.values() for _, e, _, _ in lines) == 100 - 4 - 2 - 4
    assert sum(exercises.points(ex) for ex in exercises.EXERCISES) == 100


def test_a_region_that_does_not_compile_is_graded_as_a_stub_and_the_rest_of_its_file_still_runs(tmp_path):
    student_copy.write_copy(str(tmp_path / "copy"), stubbed=[], git=False)
    with_region(tmp_path / "copy", "data.py", 1, "    return (((")
    missing = grade.grading_copy(str(tmp_path / "copy"), str(tmp_path / "tree"))
    assert missing == {1: "it does not compile (SyntaxError on line 1 of the region in data.py: '(' was never closed)"}
    with open(tmp_path / "tree" / "data.py") as f:
        spliced = exercises.regions(f.read())
    assert spliced[1] == ['    raise NotImplementedError("exercise 1: the curriculum\'s sequences")']
    with open(os.path.join(ROOT, "data.py")) as f:
        assert spliced[2] == exercises.regions(f.read())[2]  # exercise 2, in the same file, is the submission's

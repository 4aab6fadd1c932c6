"""The course's exercises: which solution region of the code each one is, and what earns its points. The
student copy (student_copy.py), the grader (grade.py) and the drawn cases (cases.py) read this table;
docs/classroom.md is the handout.

A region is marked in the code by a comment line before and after it:

    # --- exercise 3: the continuous-thought loop ---
    ...the solution...
    # --- end of exercise 3 ---

A student copy replaces it by `raise NotImplementedError("exercise 3: ...")` (the docstring above it stays).
Only the code inside the regions is graded: the grader splices a submission's regions into a fresh copy of the
teacher's project and runs the teacher's tests there. Test code that would give a solution away sits between
`# --- teacher only ... ---` and `# --- end of teacher only ---`, and the files in TEACHER_FILES hold
solutions or grading machinery: both are left out of student copies.
"""

import os
import re
import subprocess
from collections import namedtuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A check earns `points` when it passes (a parametrized test: in proportion to its cases that pass). `test` is a
# pytest node id (a parametrized test by its name), or CASES: the exercise's function on cases drawn at grading
# time, compared with the teacher's solution on the same cases (cases.py). `concept` is what a lost point means.
# `needs`: the other exercises whose solutions the check also runs; it fails while any of them is unsolved.
Check = namedtuple("Check", ["test", "points", "concept", "needs"], defaults=((),))
Exercise = namedtuple("Exercise", ["number", "title", "where", "checks"])
CASES = "cases drawn at grading"

DATA, COCONUT = "tests/test_data.py::", "tests/test_coconut.py::"
TRAIN, EVAL = "tests/test_train.py::", "tests/test_eval.py::"
EXERCISES = [
    Exercise(1, "the curriculum's sequences", "data.py: layout", [
        Check(DATA + "test_coconut_stage_sequences", 3, "stage k: k thoughts stand for the first k steps"),
        Check(DATA + "test_c_multiplies_thoughts_and_padding_to_max_is_a_switch", 1, "c thoughts per step"),
        Check(DATA + "test_past_the_last_stage_the_thoughts_are_capped_at_the_last_stage", 1,
              "past the last stage: max_latent_stage thoughts, or min(steps, max_latent_stage) unpadded"),
        Check(DATA + "test_baseline_sequences", 2, "the baselines' sequences (CoT, No-CoT, pause, iCoT)"),
        Check(CASES, 3, "random methods, curricula, step counts and stages")]),
    Exercise(2, "left padding", "data.py: collate", [
        Check(DATA + "test_collation_aligns_first_thought_and_pads", 4, "first thoughts aligned by left pads"),
        Check(DATA + "test_collation_without_thoughts_only_right_pads", 2, "rows without thoughts: right pads only"),
        Check(CASES, 4, "random batches")]),
    Exercise(3, "the continuous-thought loop", "coconut.py: Coconut.run_thoughts", [
        Check(COCONUT + "test_gradients_flow_through_the_thoughts_as_finite_differences_say", 12,
              "the loss reaches the passes before a thought (never detach it)"),
        Check(COCONUT + "test_the_loop_is_a_fixed_point_of_one_forward_pass", 3,
              "each thought is the final hidden state of the position before it", (2,)),
        Check(COCONUT + "test_thought_slot_holds_previous_final_hidden_state", 1,
              "each thought is the final hidden state of the position before it"),
        Check(COCONUT + "test_n_aligned_thoughts_take_n_plus_one_passes", 2, "n aligned thoughts: n+1 passes", (2,)),
        Check(COCONUT + "test_mixed_batch_equals_each_row_alone", 2, "rows with different thought counts", (2,)),
        Check(COCONUT + "test_pause_as_thought_keeps_the_latent_embedding_in_one_pass", 2,
              "pause as thought (§4.4): nothing fed back, one pass", (2,)),
        Check(CASES, 3, "random batches on random models")]),
    Exercise(4, "batched cached decoding", "coconut.py: Coconut.generate", [
        Check(COCONUT + "test_batched_generate_equals_row_by_row_and_uncached_decoding", 6,
              "each row decodes as it would alone", (2, 3)),
        Check(COCONUT + "test_generate_continues_each_left_padded_row_at_its_own_position", 4,
              "each row continues at its own next position", (3,)),
        Check(COCONUT + "test_generate_stops_each_row_at_eos_and_counts_tokens_before_it", 5,
              "a row stops at eos and writes eos from then on", (2, 3)),
        Check(CASES, 5, "random prompts on random models", (3,))]),
    Exercise(5, "the stage schedule", "train.py: stage_for_epoch", [
        Check(TRAIN + "test_stage_schedule_per_method", 3, "each method's schedule"),
        Check(TRAIN + "test_stage_lengths_may_differ_and_the_last_one_repeats", 2, "per-stage lengths"),
        Check(CASES, 5, "random schedules")]),
    Exercise(6, "the optimizer reset", "train.py: optimizer_for_stage", [
        Check(TRAIN + "test_two_stage_run_rebuilds_the_optimizer_at_each_stage", 4,
              "a fresh AdamW at each stage change, the same one within a stage", (1, 2, 3, 4, 5)),
        Check(TRAIN + "test_resume_equals_uninterrupted_bit_for_bit[1]", 3,
              "a run resumed mid-stage keeps its saved moments", (1, 2, 3, 4, 5)),
        Check(CASES, 3, "random stage sequences, with a resume")]),
    Exercise(7, "the outcome classes", "eval.py: classify", [
        Check(EVAL + "test_outcome_classes", 7, "the six classes on a hand-made graph"),
        Check(CASES, 8, "random generated questions and written paths")]),
]
EXERCISE_FILES = ("data.py", "coconut.py", "train.py", "eval.py")  # the files that hold the regions
TEACHER_FILES = ("classroom/cases.py", "classroom/mistakes.py", "tests/test_classroom.py")  # not for students

REGION = re.compile(r"^(?P<indent>\s*)# --- exercise (?P<n>\d+): (?P<title>.*) ---$")
END = re.compile(r"^\s*# --- end of exercise (?P<n>\d+) ---$")
TEACHER, END_TEACHER = re.compile(r"^\s*# --- teacher only.* ---$"), re.compile(r"^\s*# --- end of teacher only ---$")


def points(ex):
    return sum(c.points for c in ex.checks)


def check_of(node_id):
    """(exercise, check) of a collected test's node id, or (None, None)."""
    for ex in EXERCISES:
        for c in ex.checks:
            if node_id == c.test or (node_id.startswith(c.test + "[") and "[" not in c.test):
                return ex, c
    return None, None


def pytest_ids():
    return [c.test for ex in EXERCISES for c in ex.checks if c.test != CASES]


def expected_failures(stubbed, node_ids):
    """The node ids among node_ids that fail when the exercises `stubbed` are stubs: their own tests, and every
    test that needs one of them."""
    out = set()
    for node in node_ids:
        ex, c = check_of(node)
        if ex and (ex.number in stubbed or set(c.needs) & set(stubbed)):
            out.add(node)
    return out


def project_files():
    """The files git tracks (untracked and ignored ones, run folders and data, stay behind)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f and os.path.isfile(os.path.join(ROOT, f))]


def regions(text):
    """{exercise number: the lines strictly inside its region} of a file's text."""
    found, current = {}, None
    for line in text.split("\n"):
        if current is not None:
            if END.match(line) and int(END.match(line)["n"]) == current:
                current = None
            else:
                found[current].append(line)
        elif REGION.match(line):
            current = int(REGION.match(line)["n"])
            found[current] = []
    if current is not None:
        del found[current]  # a region that never ends is no region
    return found


def replace_regions(text, new):
    """The text with the inside of each region n in `new` replaced by new[n] (a list of lines)."""
    out, skipping = [], None
    for line in text.split("\n"):
        if skipping is not None:
            if END.match(line) and int(END.match(line)["n"]) == skipping:
                out.append(line)
                skipping = None
            continue
        out.append(line)
        m = REGION.match(line)
        if m and int(m["n"]) in new:
            out += new[int(m["n"])]
            skipping = int(m["n"])
    return "\n".join(out)


def stub_lines(text):
    """{n: the stub's lines} for every region of `text`."""
    stubs = {}
    for line in text.split("\n"):
        m = REGION.match(line)
        if m:
            stubs[int(m["n"])] = [f'{m["indent"]}raise NotImplementedError("exercise {m["n"]}: {m["title"]}")']
    return stubs


def stub_source(text, stubbed):
    """A file's text with the regions of the exercises `stubbed` replaced by a NotImplementedError and the
    teacher-only test code removed."""
    out, skipping = [], False
    for line in text.split("\n"):
        if skipping:
            skipping = not END_TEACHER.match(line)
        elif TEACHER.match(line):
            skipping = True
        else:
            out.append(line)
    return replace_regions("\n".join(out), {n: s for n, s in stub_lines(text).items() if n in stubbed})

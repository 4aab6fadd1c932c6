"""The course's exercises: which solution region of the code each one is, the tests that check it, and which
earlier exercises those tests also run. classroom/student_copy.py and classroom/grade.py read this table;
docs/classroom.md is the handout.

A region is marked in the code by a comment line before and after it:

    # --- exercise 3: the continuous-thought loop ---
    ...the solution...
    # --- end of exercise 3 ---

A student copy replaces it by `raise NotImplementedError("exercise 3: ...")` (the docstring above it stays).
Test code that would give a solution away sits between `# --- teacher only ... ---` and
`# --- end of teacher only ---` and is left out of student copies.
"""

import re
from collections import namedtuple

Exercise = namedtuple("Exercise", ["number", "title", "where", "points", "tests", "needs"])
# tests: pytest node ids (a parametrized test by its name: all its cases); needs: {node id: the exercises whose
# solutions that test also runs}. A test of an exercise fails while any exercise it needs is unsolved.

DATA, COCONUT = "tests/test_data.py::", "tests/test_coconut.py::"
TRAIN, EVAL = "tests/test_train.py::", "tests/test_eval.py::"
EXERCISES = [
    Exercise(1, "the curriculum's sequences", "data.py: layout", 10,
             [DATA + "test_coconut_stage_sequences", DATA + "test_c_multiplies_thoughts_and_padding_to_max_is_a_switch",
              DATA + "test_baseline_sequences"], {}),
    Exercise(2, "left padding", "data.py: collate", 10,
             [DATA + "test_collation_aligns_first_thought_and_pads",
              DATA + "test_collation_without_thoughts_only_right_pads"],
             {}),
    Exercise(3, "the continuous-thought loop", "coconut.py: Coconut.run_thoughts", 25,
             [COCONUT + "test_thought_slot_holds_previous_final_hidden_state",
              COCONUT + "test_gradients_flow_through_the_thoughts_as_finite_differences_say",
              COCONUT + "test_the_loop_is_a_fixed_point_of_one_forward_pass",
              COCONUT + "test_n_aligned_thoughts_take_n_plus_one_passes",
              COCONUT + "test_mixed_batch_equals_each_row_alone"],
             {COCONUT + "test_the_loop_is_a_fixed_point_of_one_forward_pass": [2],
              COCONUT + "test_n_aligned_thoughts_take_n_plus_one_passes": [2],
              COCONUT + "test_mixed_batch_equals_each_row_alone": [2]}),
    Exercise(4, "batched cached decoding", "coconut.py: Coconut.generate", 20,
             [COCONUT + "test_batched_generate_equals_row_by_row_and_uncached_decoding",
              COCONUT + "test_generate_stops_each_row_at_eos_and_counts_tokens_before_it"],
             {COCONUT + "test_batched_generate_equals_row_by_row_and_uncached_decoding": [2, 3],
              COCONUT + "test_generate_stops_each_row_at_eos_and_counts_tokens_before_it": [3]}),
    Exercise(5, "the stage schedule", "train.py: stage_for_epoch", 10,
             [TRAIN + "test_stage_schedule_per_method",
              TRAIN + "test_stage_lengths_may_differ_and_the_last_one_repeats"],
             {}),
    Exercise(6, "the optimizer reset", "train.py: optimizer_for_stage", 10,
             [TRAIN + "test_two_stage_run_rebuilds_the_optimizer_at_each_stage",
              TRAIN + "test_resume_equals_uninterrupted_bit_for_bit[1]"],
             {TRAIN + "test_two_stage_run_rebuilds_the_optimizer_at_each_stage": [1, 2, 3, 4, 5],
              TRAIN + "test_resume_equals_uninterrupted_bit_for_bit[1]": [1, 2, 3, 4, 5]}),
    Exercise(7, "the outcome classes", "eval.py: classify", 15, [EVAL + "test_outcome_classes"], {}),
]

REGION = re.compile(r"^(?P<indent>\s*)# --- exercise (?P<n>\d+): (?P<title>.*) ---$")
END = re.compile(r"^\s*# --- end of exercise (?P<n>\d+) ---$")
TEACHER, END_TEACHER = re.compile(r"^\s*# --- teacher only.* ---$"), re.compile(r"^\s*# --- end of teacher only ---$")


def exercise_of(node_id):
    """(exercise, the test id of the table) of a collected test's node id, or (None, None)."""
    for ex in EXERCISES:
        for test in ex.tests:
            if node_id == test or (node_id.startswith(test + "[") and "[" not in test):
                return ex, test
    return None, None


def expected_failures(stubbed, node_ids):
    """The node ids among node_ids that fail when the exercises `stubbed` are stubs: their own tests, and every
    test that needs one of them."""
    out = set()
    for node in node_ids:
        ex, test = exercise_of(node)
        if ex and (ex.number in stubbed or set(ex.needs.get(test, [])) & set(stubbed)):
            out.add(node)
    return out


def stub_source(text, stubbed):
    """A file's text with the regions of the exercises `stubbed` replaced by a NotImplementedError and the
    teacher-only test code removed."""
    out, skipping = [], None
    for line in text.split("\n"):
        if skipping == "teacher":
            skipping = None if END_TEACHER.match(line) else "teacher"
            continue
        if skipping is not None:
            if END.match(line) and int(END.match(line)["n"]) == skipping:
                out.append(line)
                skipping = None
            continue
        m = REGION.match(line)
        if TEACHER.match(line):
            skipping = "teacher"
        elif m and int(m["n"]) in stubbed:
            out += [line, f'{m["indent"]}raise NotImplementedError("exercise {m["n"]}: {m["title"]}")']
            skipping = int(m["n"])
        else:
            out.append(line)
    return "\n".join(out)

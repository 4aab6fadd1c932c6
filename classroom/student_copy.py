"""Writes a student copy of the project: a fresh repository without history, each exercise's solution region
replaced by a stub that raises NotImplementedError (its docstring kept), the tests included without the
teacher-only code, and neither the drawn cases nor the kit's own tests (exercises.TEACHER_FILES). The
exercises are listed in classroom/exercises.py; the handout is docs/classroom.md.

    python classroom/student_copy.py ../coconut-student                 # every exercise a stub
    python classroom/student_copy.py ../coconut-ex3 --exercises 3       # only exercise 3
    python classroom/grade.py ../coconut-student                        # points per exercise and a total
"""

import argparse
import os
import shutil
import subprocess
import sys

from exercises import EXERCISES, ROOT, TEACHER_FILES, project_files, stub_source

STUDENT_NOTE = """> **Student copy.** Exercises {numbers} are stubs that raise `NotImplementedError("exercise N: ...")`;
> the handout is [docs/classroom.md](docs/classroom.md). Check your work with `python classroom/grade.py`
> (points per exercise, and the concept behind each lost point) or with an exercise's own command (its
> *Check:* line in the handout). Only the code between an exercise's markers is graded. Until every exercise
> is solved, `python -m pytest` fails the tests that run unsolved code and names the exercises they wait for.

"""


def write_copy(folder, stubbed, git=True):
    for name in project_files():
        if name in TEACHER_FILES:
            continue
        source, target = os.path.join(ROOT, name), os.path.join(folder, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if name.endswith(".py") or name == "README.md":
            with open(source, encoding="utf-8") as f:
                text = f.read()
            if name == "README.md":
                text = STUDENT_NOTE.format(numbers=", ".join(map(str, stubbed)) or "none") + text
            with open(target, "w", encoding="utf-8") as f:
                f.write(stub_source(text, stubbed) if name.endswith(".py") else text)
            shutil.copymode(source, target)
        else:
            shutil.copy2(source, target)
    if git:  # a fresh repository: the solutions are not in its history
        env = dict(os.environ, GIT_AUTHOR_NAME="coconut", GIT_AUTHOR_EMAIL="coconut@localhost",
                   GIT_COMMITTER_NAME="coconut", GIT_COMMITTER_EMAIL="coconut@localhost")
        for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "Coconut course: student copy"]):
            subprocess.run(["git", *cmd], cwd=folder, env=env, check=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="a folder that does not exist yet")
    p.add_argument("--exercises", type=int, nargs="*", default=None,
                   help="the exercises to stub (default: all; none: a copy with every solution)")
    p.add_argument("--no-git", action="store_true", help="do not make the copy a repository")
    args = p.parse_args(argv)
    numbers = [ex.number for ex in EXERCISES]
    stubbed = numbers if args.exercises is None else args.exercises
    if not set(stubbed) <= set(numbers):
        sys.exit(f"error: --exercises {' '.join(map(str, stubbed))}: the exercises are {numbers}")
    if os.path.exists(args.out):
        sys.exit(f"error: {args.out}: already exists; a student copy goes into a new folder")
    write_copy(args.out, stubbed, git=not args.no_git)
    print(f"wrote {args.out}: exercises {', '.join(map(str, stubbed)) or 'none'} stubbed; "
          f"grade it with: python classroom/grade.py {args.out}")


if __name__ == "__main__":
    main()

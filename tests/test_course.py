"""The course kit (course/): nbgrader generates each assignment's student version; autograded, the source
version with its solutions scores full marks on every autograded cell and the student version scores 0 there,
without crashing. The smoke profile keeps the runs inside the assignments to seconds."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medlib.paths import REPO_ROOT

COURSE = REPO_ROOT / "course"
ASSIGNMENTS = sorted(p.name for p in (COURSE / "source").iterdir() if p.is_dir())
pytestmark = pytest.mark.slow


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(Path(sys.executable).parent / "nbgrader"), *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=1800)


def test_every_assignment_has_four_to_six_exercises_of_the_three_kinds():
    import json

    for name in ASSIGNMENTS:
        nb = json.loads((COURSE / "source" / name / f"{name}.ipynb").read_text())
        cells = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade")]
        autograded = [c for c in cells if c["cell_type"] == "code"]
        written = [c for c in cells if c["cell_type"] == "markdown"]
        text = "".join("".join(c["source"]) for c in nb["cells"])
        assert 4 <= len({c["metadata"]["nbgrader"]["grade_id"].rsplit("_tests", 1)[0] for c in cells}) <= 6, name
        assert autograded and written and "predict, then run" in text and "implement" in text and "read the verdict" in text


def test_solutions_score_full_marks_and_student_versions_score_zero(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(COURSE, course, ignore=shutil.ignore_patterns("release", "submitted", "autograded", "feedback", "gradebook.db"))
    for name in ASSIGNMENTS:
        done = _nbgrader(course, "generate_assignment", name, "--force")
        assert done.returncode == 0, done.stderr[-3000:]
        for student, version in (("solution", "source"), ("student", "release")):
            target = course / "submitted" / student / name
            target.mkdir(parents=True)
            shutil.copy(course / version / name / f"{name}.ipynb", target / f"{name}.ipynb")
    for name in ASSIGNMENTS:
        done = _nbgrader(course, "autograde", name, "--force")
        assert done.returncode == 0, done.stderr[-3000:]

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for name in ASSIGNMENTS:
            for student, full in (("solution", True), ("student", False)):
                nb = gb.find_submission_notebook(name, name, student)
                auto = [g for g in nb.grades if g.cell.cell_type == "code"]
                assert auto, (name, student)
                scored = sum(g.auto_score or 0 for g in auto)
                maximum = sum(g.max_score for g in auto)
                assert scored == (maximum if full else 0), (name, student, scored, maximum)

"""nbgrader's configuration for medlib's course kit: run nbgrader from this folder (`make course`)."""

import os

c = get_config()  # noqa: F821  (nbgrader provides it)
c.CourseDirectory.course_id = "medlib"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
# Cells that run a smoke arm take tens of seconds; nbgrader's default is 30 s a cell.
c.ExecutePreprocessor.timeout = 900
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

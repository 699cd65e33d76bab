# Two commands: `make reproduce` (the project's main job) and `make test`.
# Both create .venv once and reuse it; it is rebuilt only when pyproject.toml or constraints.txt changes.
# constraints.txt pins every package to the versions the committed numbers were computed with.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medlib-installed
# torch for this platform (CPU machines; they install from the local disk). GPU users: see README.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: reproduce test test-fast lint zoo clean-results course

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[notebooks,test,dev,course]"
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/medlib reproduce

# The suite runs on every core, one test file to a worker (a file's tests share its module fixtures).
test: $(STAMP)
	$(BIN)/ruff check medlib tests benchmarks
	$(BIN)/nbstripout --verify notebooks/*.ipynb
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n auto --dist loadfile

# The unit tier for the edit loop (under 5 minutes on 2 cores): everything not marked slow.
test-fast: $(STAMP)
	$(BIN)/ruff check medlib tests benchmarks
	$(BIN)/nbstripout --verify notebooks/*.ipynb
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n auto --dist loadfile -m "not slow"

zoo: $(STAMP)
	$(BIN)/medlib zoo build

# The course kit: nbgrader's student versions of every assignment (course/release/, not tracked) from course/source/.
course: $(STAMP)
	cd course && for a in source/*/; do PATH="$(abspath $(BIN)):$$PATH" nbgrader generate_assignment "$$(basename $$a)" --force || exit 1; done

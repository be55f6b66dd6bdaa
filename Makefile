# digitlab: `make demo` runs the main job, `make test` the whole test suite. Both build .venv/ first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint clean venv

venv: $(STAMP)

# torch==2.13.0 first: it is the CPU build that lies on this machine's disk (others are multi-GB CUDA
# builds); then the project, editable, with its test and torch extras.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[torch,dev]'
	touch $(STAMP)

# the main job: read every number in a real phone photo with the shipped NumPy model
demo: $(STAMP)
	$(BIN)/digitlab predict data/samples/phone-page.png --out runs/demo
	@echo "annotated result: runs/demo/phone-page.annotated.png"

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/digitlab bench all

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache

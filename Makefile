# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip on these machines prints a warning per package for absent local mirrors; keep the log readable
QUIET_PIP := grep -v "^WARNING: Location 'file:" || true

.PHONY: install demo test clean
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q -e ".[test]" 2>&1 | $(QUIET_PIP)
	$(PY) -c "import fetal_detect, ultralytics, torch, onnxruntime"
	touch $(STAMP)

demo: install
	$(PY) -m fetal_detect demo

test: install
	$(PY) -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

clean:
	rm -rf runs/datasets runs/evaluate runs/demo .pytest_cache

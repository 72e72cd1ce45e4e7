# tac8: everyday entry points. The venv lives in .venv (made by `make venv`).
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: venv test bench demo install clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'

venv: $(PY)

test: $(PY)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q

demo: $(PY)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/tac8 demo

bench: $(PY)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m tests.bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

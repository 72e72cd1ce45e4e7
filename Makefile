# tac8: everyday entry points. The venv lives in .venv; it is (re)built when pyproject.toml changes.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN    := PATH="$(abspath $(VENV))/bin:$$PATH"

.PHONY: venv test bench soak demo install clean

$(STAMP): pyproject.toml
	[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The test command (CI runs it through .ci/run).
test: $(STAMP)
	$(RUN) $(PY) -m pytest -q

# tac8 end to end in a sandbox under the real supervisord (no GitHub account or AI key).
demo: $(STAMP)
	$(RUN) $(VENV)/bin/tac8 demo

bench: $(STAMP)
	$(RUN) $(PY) -m tests.bench

# An hour of steady work under supervisord: memory, fds and inotify watches must stay flat
# (TAC8_BENCH_SOAK_MINUTES=N for another duration).
soak: $(STAMP)
	$(RUN) $(PY) -m tests.bench soak

# On the always-on box: venv, gh, systemd unit, then `tac8 doctor`.
install:
	bash conf/install.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis demo

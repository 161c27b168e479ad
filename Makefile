# Two commands do everything on a fresh machine (Python 3.11):
#   make demo   prepare AV-MNIST, train the four default experiments, evaluate, export, print a table
#   make test   run the whole test suite (installs Debian's espeak-ng with apt-get when missing:
#               the tts_digits tests synthesise speech with it)
# Both create .venv and install the pinned requirements when missing.

PYTHON_BIN ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: install demo test clean-venv

$(STAMP): requirements.txt requirements-dev.txt requirements-presets.txt pyproject.toml
	test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-presets.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . || \
		$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m training.demo $(DEMO_ARGS)

test: $(STAMP)
	command -v espeak-ng >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng)
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)

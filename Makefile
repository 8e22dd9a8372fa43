# The course in two commands: `make lab` and `make test`. Everything else is a helper.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: lab test lint setup serve stop status notebooks clean help

help:
	@echo "make lab    set up, start the vLLM server, open JupyterLab (Ctrl-C stops both)"
	@echo "make test   set up, then run every test and every solution notebook on a live server"
	@echo "make serve | stop | status    the server alone;  make notebooks  rebuild exercises"
	@echo "make lint   ruff and mypy over labs/ and tests/ (the first step of make test)"

setup:
	@bash infra/local/setup.sh

lab: setup
	$(PY) -m labs lab

lint: setup
	$(PY) -m ruff check labs tests && $(PY) -m mypy

test: setup
	$(PY) -m ruff check labs tests && $(PY) -m mypy
	$(PY) -m pytest tests solutions --nbmake --nbmake-timeout=900 -p no:cacheprovider --durations=10

serve: setup
	$(PY) -m labs serve --profile $${PROFILE:-naive}

stop:
	@if [ -x $(PY) ]; then $(PY) -m labs stop; else echo "nothing installed, nothing to stop"; fi

status:
	@$(PY) -m labs status

notebooks:
	$(PY) -m labs.course.exercises

clean: stop
	rm -rf $(VENV) .pytest_cache

.PHONY: docs
docs:  # the README's and the guides' numbers and docs/reference/ from results/ (python -m labs.course.coursedocs run makes them)
	$(PY) -m labs.course.coursedocs write

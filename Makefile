# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# torch is installed first and pinned, so that nothing pulls in a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/motif-video info --preset motif-video-2b
	@echo "Video generation with the embedded default model is not built yet (issues #3 and #5);"
	@echo "until then 'make demo' shows the architecture of the released model."

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info

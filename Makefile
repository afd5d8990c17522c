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
	@mkdir -p outputs
	$(PY) -c "from motif_video.random_weights import build_random_pipeline as b; b('outputs/random-weights')"
	$(VENV)/bin/motif-video generate "a red circle moves to the left" --weights outputs/random-weights \
		--height 64 --width 96 --frames 17 --steps 8 --fps 8 --out outputs/demo.mp4 --contact-sheet
	@echo "outputs/demo.mp4 shows the whole pipeline running on RANDOM weights (so: noise)."
	@echo "The embedded trained default model, and generation without --weights, arrive with issue #5."

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info

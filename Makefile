# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# torch is installed first and pinned, so that nothing pulls in a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0

.PHONY: demo test install clean embedded embedded-4step

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps rapidocr-onnxruntime==1.4.4  # OCR models in the wheel; see pyproject
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	@mkdir -p outputs
	$(VENV)/bin/motif-video generate "a red circle moves to the left on a gray background" \
		--out outputs/demo.mp4 --gif --contact-sheet
	@echo "outputs/demo.mp4 (and .gif, .png) were made by the embedded shapes-world model (no download)."
	@echo "Try other prompts: colors red green blue yellow purple white; shapes circle square triangle;"
	@echo "moves up / down / to the left / to the right; on a (striped) gray or black background;"
	@echo "or as people type it: \"red circle goes left\", \"blue square moving up\"."

# Rebuild the embedded default model from scratch (about 100 minutes on a 2-core CPU): train (four stages:
# configs/shapes-tiny.toml, its unrouted finish configs/shapes-tiny-finish.toml, continuing from a frame
# configs/shapes-tiny-continue.toml, then a closing text-to-video stretch configs/shapes-tiny-close.toml),
# fit its decoder anew with context across latent frames and each frame's
# error against its contrast (refit-decoder: the latents stay), score, ship.
REFIT := motif-video refit-decoder runs/shapes-tiny-close/pipeline runs/shapes-tiny-data/clips --out runs/shapes-tiny-decoder/pipeline
STAGES := motif-video train configs/shapes-tiny.toml && motif-video train configs/shapes-tiny-finish.toml && motif-video train configs/shapes-tiny-continue.toml && motif-video train configs/shapes-tiny-close.toml
embedded: $(VENV)/.installed
	$(VENV)/bin/motif-video train configs/shapes-tiny.toml
	$(VENV)/bin/motif-video train configs/shapes-tiny-finish.toml
	$(VENV)/bin/motif-video train configs/shapes-tiny-continue.toml
	$(VENV)/bin/motif-video train configs/shapes-tiny-close.toml
	$(VENV)/bin/$(REFIT)
	$(VENV)/bin/motif-video eval shapes --weights runs/shapes-tiny-decoder/pipeline --count 16 --captions all --out runs/shapes-tiny-decoder/eval
	$(PY) -m motif_video.embedded runs/shapes-tiny-decoder/pipeline --eval runs/shapes-tiny-decoder/eval/report.json \
		--name shapes-tiny-v24 --figure docs/figures/shapes-tiny-samples.png --command "$(STAGES) && $(REFIT)"

# Rebuild the shipped 4-step student (shapes-tiny-4step) from the embedded model (about 45 minutes on a
# 2-core CPU): the teacher's trajectories, the distillation, its score, shipped beside the default.
embedded-4step: $(VENV)/.installed
	$(VENV)/bin/motif-video distill configs/shapes-tiny-4step.toml
	$(VENV)/bin/motif-video eval shapes --weights runs/shapes-tiny-4step/pipeline --count 16 --out runs/shapes-tiny-4step/eval
	$(PY) -m motif_video.embedded runs/shapes-tiny-4step/pipeline --eval runs/shapes-tiny-4step/eval/report.json \
		--out src/motif_video/weights/shapes-tiny-4step

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info

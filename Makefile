# One-command environment, tests and demo. Every target works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.project-installed
# Every pip call of the setup (the installer's too) takes the exact versions of constraints.txt.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup test demo lint clean

setup: $(STAMP)
	@$(PY) tools/install_detectron2.py || { echo "make setup: step 'detectron2' failed (see above)"; exit 1; }
	@$(PY) -c "import pretrain, transfer, detectron2, detectron2.modeling, detectron2.evaluation, fvcore, iopath, pycocotools" \
		|| { echo "make setup: step 'import check' failed"; exit 1; }
	@echo "make setup: environment ready in $(VENV)"

$(PY):
	@echo "make setup: step 'venv': creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV) || { echo "make setup: step 'venv' failed"; exit 1; }

# Reinstalled only when the project's metadata changes, so that a second `make setup` is a quick no-op.
$(STAMP): $(PY) setup.cfg pyproject.toml constraints.txt
	@$(PY) -c "import torch, torchvision" 2>/dev/null || { \
		echo "make setup: step 'torch': pip install $(TORCH)"; \
		$(PIP) install $(TORCH) || { echo "make setup: step 'torch' failed"; exit 1; }; }
	@echo "make setup: step 'project': pip install -e .[transfer,dev]"
	@$(PIP) install --no-build-isolation -e '.[transfer,dev]' \
		|| { echo "make setup: step 'project' failed"; exit 1; }
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(PY) tools/demo.py

lint: setup
	$(PY) -m flake8 pretrain transfer tools tests
	$(PY) -m isort --check-only --diff pretrain transfer tools tests

clean:
	rm -rf output .pytest_cache

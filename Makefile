# lora-edu: `make lab` opens the series, `make test` runs every check. Both create .venv first.
# TORCH_INDEX=auto|cpu|cuda|default|cuXYZ|URL picks the torch build (tools/install_torch.py --help); auto takes
# the CPU-only build (~190 MB) on Linux without an NVIDIA GPU, instead of the ~2.7 GB CUDA build.
PY      ?= python3
TORCH_INDEX ?= auto
VENV    ?= .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip install -q -c constraints.txt
BASE    := $(VENV)/.installed-base
DEV     := $(VENV)/.installed-dev
# JupyterLab reads jupyter/lab-settings/overrides.json: no "get notified about Jupyter news?" pop-up
LAB_FLAGS := --LabApp.app_settings_dir=$(CURDIR)/jupyter/lab-settings

.PHONY: setup setup-dev lab test fuzz lint html student solutions bench times pretrain gpu-check wheel clean claims vehicle

$(BASE): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python tools/install_torch.py --index $(TORCH_INDEX)   # the pinned torch first, CPU-only without a GPU
	$(PIP) -e .
	$(BIN)/python -c "import lora_edu, ipywidgets, jupyterlab_widgets; print('lora_edu', lora_edu.__version__, 'ready')"
	touch $@

$(DEV): $(BASE)
	$(PIP) -e ".[dev]"
	touch $@

setup: $(BASE)
setup-dev: $(DEV)

lab: $(BASE)  ## open the notebook series in JupyterLab
	$(BIN)/jupyter lab $(LAB_FLAGS) $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/00_start_here.ipynb

test: $(DEV)  ## lint + the whole test suite (notebooks in fast mode included)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 -m "not browser"
	$(BIN)/python -m pytest -m browser

fuzz: $(DEV)  ## the adapter-loader mutation fuzz at 10,000 cases (make test runs 1,000)
	LORA_EDU_FUZZ_CASES=10000 $(BIN)/python -m pytest -n 2 -s tests/test_fuzz_loader.py

lint: $(DEV)
	$(BIN)/ruff check .

html: $(DEV)  ## execute every notebook (full mode, ~4 min on 2 cores) and export HTML + index to build/html
	$(BIN)/python tools/export_html.py build/html

student: $(BASE)  ## copies of the notebooks without solution cells, in notebooks/student
	$(BIN)/python tools/student.py notebooks notebooks/student

solutions: $(BASE)  ## worked-solutions edition in notebooks/solutions (build output, from the cells tagged `solution`)
	$(BIN)/python tools/solutions.py

claims: $(DEV)  ## run every notebook in full mode; fail when a claim its prose rests on does not hold
	$(BIN)/python tools/claims.py

vehicle: $(DEV)  ## the teaching vehicle's target table (issue 11), 5 seeds: benchmarks/results/vehicle.json
	$(BIN)/python benchmarks/vehicle.py

times: $(DEV)  ## time every notebook in fast and full mode
	$(BIN)/python benchmarks/notebook_times.py

bench: $(DEV)  ## LoRA vs PEFT performance table
	$(BIN)/python benchmarks/peft_bench.py

pretrain: $(BASE)  ## retrain the checkpoint into build/ (REPLACE=1: overwrite the shipped one)
	$(BIN)/python -m lora_edu.pretrain $(if $(REPLACE),--replace-shipped)

gpu-check: $(DEV)  ## on a CUDA machine: tests on the GPU, notebooks 05-06 in full, PEFT bench with CUDA graphs
	$(BIN)/python tools/gpu_check.py

wheel: $(BASE)  ## the package as a wheel (with the checkpoint and LICENSE) in build/dist, for use outside a clone
	$(BIN)/python -m pip wheel --no-deps -w build/dist .

clean:
	rm -rf build notebooks/student .pytest_cache

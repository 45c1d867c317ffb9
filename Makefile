# llavakit developer entry points. `make demo` and `make test` install what they need themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel for laptops and CI; GPU users install their own CUDA torch first (see README).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-dev
# The demo's install compiles no bytecode: Python compiles what it imports on first use, and
# precompiling all of torch took about 45 s of a fresh install (README). The test install keeps
# pip's default: the tests start dozens of processes, and where PYTHONDONTWRITEBYTECODE is set
# each would compile torch's imports again (CI 361 s -> 579 s of tests, measured).
PIP_FLAGS_demo := --no-compile
# The demo needs only the core, the teacher client and the OCR models: no web UI, server or
# test tools.
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint bench install clean browser stand-ins

# .installed-EXTRA: the CPU torch wheel and llavakit with that extra (dev or demo).
$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(PIP_FLAGS_$*) "$(TORCH_SPEC)" -e ".[$*]"
	touch $@

install: $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/llavakit demo --out runs/demo

# Rebuild the shipped stage-0 stand-ins (the pretrained CLIP and LLM the demo starts from):
# about 45 minutes on a 2-core laptop. Needed only after a change to the world or stage 0.
stand-ins: $(DEMO_STAMP)
	$(BIN)/llavakit world stand-ins --out llavakit/demo/stand_ins --work runs/stand_ins_work

test: $(STAMP) browser
	$(BIN)/ruff check llavakit tests bench
	$(BIN)/pytest -q --durations=15

# The web UI test drives Debian's Chromium; install it when we can (root), else that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		echo "chromium not installed: the web UI browser test will be skipped"; }

lint: $(STAMP)
	$(BIN)/ruff check llavakit tests bench
	$(BIN)/ruff format --check llavakit tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# On these machines torch 2.14.1 / torchvision 0.29.1 come from local disk; elsewhere from PyPI.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out
PYTEST_ARGS ?= -n 2
CPP_BUILD ?= build/cpp
CHROMIUM_PKGS := chromium chromium-driver
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends

.PHONY: venv demo test test-fast lint format bench clean cpp cpp-test

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PINS)
	$(BIN)/python -m pip install -e ".[export,ort,text,camera,fast,train,calib,bench,dev]"
	# Best effort: TensorRT's runtime-only wheel lets a test check our API calls against the real
	# bindings (no GPU here, so nothing is deserialised). Without it that test skips.
	$(BIN)/python -m pip install "tensorrt-lean>=10" || echo "tensorrt-lean not installable here: its API test will skip"
	# Best effort: Debian's Chromium and chromedriver (as root, with apt-get) for the page test of
	# runtime.serve in a headless browser. Without them that test skips.
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "apt-get install $(CHROMIUM_PKGS)"; \
		$(APT_INSTALL) $(CHROMIUM_PKGS) >/dev/null 2>&1 \
		|| { apt-get update >/dev/null 2>&1 && $(APT_INSTALL) $(CHROMIUM_PKGS) >/dev/null 2>&1; } \
		|| echo "chromium not installable here: the browser test will skip"; \
	else echo "not root or no apt-get: no chromium, the browser test will skip"; fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m export.build --method maskclip --backbone ViT-B-16 --pretrained openai \
		--fallback-random --classes voc --image-size 448 --output $(DEMO_OUT)/maskclip_vitb16
	$(BIN)/python -m runtime.infer --model $(DEMO_OUT)/maskclip_vitb16 --image sample:astronaut \
		--out $(DEMO_OUT)/overlay.png
	@echo "overlay written to $(DEMO_OUT)/overlay.png"

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS) -q
	@$(MAKE) --no-print-directory cpp-test

# The inner loop: everything but the full-size backbones (ViT-B/16, RN50).
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS) -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# C++ runtime: onnxruntime headers (fetched) + the wheel's library, configure, build.
cpp: $(STAMP)
	@why=$$(cpp/check_deps.sh --install) || { echo "cannot build the C++ runtime: $$why"; exit 1; }
	cpp/fetch_ort.sh build/third_party $(BIN)/python
	cmake -S . -B $(CPP_BUILD) -DOVSS_PYTHON=$(CURDIR)/$(BIN)/python
	cmake --build $(CPP_BUILD) -j2

# ctest when cmake, a compiler and the -dev packages are here (best-effort apt-get as root);
# otherwise one clear SKIPPED line and success.
cpp-test: $(STAMP)
	@why=$$(cpp/check_deps.sh --install) || { echo "SKIPPED C++ tests: $$why"; exit 0; }; \
	cpp/fetch_ort.sh build/third_party $(BIN)/python >/dev/null \
		|| { echo "SKIPPED C++ tests: onnxruntime headers could not be fetched (see above)"; exit 0; }; \
	$(MAKE) --no-print-directory cpp && ctest --test-dir $(CPP_BUILD) -j2 --output-on-failure

bench: $(STAMP)
	$(BIN)/python -m benchmarks.latency --method maskclip --backbone ViT-B-16 --image-size 448 \
		--runs 10 --json benchmarks/results/maskclip_vitb16_448.json

clean:
	rm -rf $(VENV) $(DEMO_OUT)

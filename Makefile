# mlkube — every target installs what it needs and is safe to run twice.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Debian packages the tests and benchmarks start for real.
DEBS   := gcc make redis-server prometheus wrk lua5.1 valgrind
# The shells whose completion scripts `kubectl mlkube completion` writes (tests/e2e/test_cli.py).
DEBS   += zsh
# The request path's fuzz target (native/fuzz): clang, its libFuzzer and sanitizer runtimes
# (compiler-rt), and llvm-symbolizer for readable reports.
DEBS   += clang libclang-rt-14-dev llvm
# The cluster tier's node (tests/cluster): container runtime, pod network, image builds.
DEBS   += containerd runc containernetworking-plugins buildah debootstrap iptables conntrack \
          iproute2 openssl
DEBS_STAMP := $(VENV)/.debs-stamp
# The real helm binary the chart tests run (scripts/install-helm pins the version).
HELM   := $(BIN)/helm

PYTEST_ARGS ?=

.PHONY: help
help:
	@echo "make run    start the serving runtime on the embedded default"
	@echo "make test   lint, type-check and run the whole test suite"
	@echo "make bench  run the benchmarks and print the figures for docs/benchmarks.md"
	@echo "make lint   ruff and mypy --strict only"
	@echo "make fuzz   fuzz the C request path (FUZZ_SECONDS=25; make test runs it too)"
	@echo "make e2e-cluster  start etcd + kube-apiserver on loopback (Ctrl-C stops)"
	@echo "make cluster      start a single-node cluster running the project's image (root; Ctrl-C stops)"

# The gRPC modules generated from the .proto files (setup.py; never committed).
PROTOS := $(wildcard mlkube/serving/grpc/*.proto)
PROTO_PY := $(PROTOS:.proto=_pb2.py)

$(STAMP): pyproject.toml setup.py native/betadist.c native/betadist.h native/score.c native/score.h
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

$(DEBS_STAMP): Makefile
	./scripts/ensure-debs $(DEBS)
	@mkdir -p $(VENV) && touch $@

$(HELM): scripts/install-helm | $(STAMP)
	./scripts/install-helm $(VENV)
	@touch $@

.PHONY: venv
venv: $(STAMP)

.PHONY: helm
helm: $(HELM)

.PHONY: debs
debs: $(DEBS_STAMP)

# The shared library, rebuilt in place (what `pip install -e .` does).
.PHONY: native
native: $(STAMP) $(PROTO_PY)
	$(BIN)/python setup.py -q build_ext --inplace

# The gRPC modules, regenerated in place when a .proto changes (what `pip install -e .` does).
$(PROTO_PY): %_pb2.py: %.proto setup.py | $(STAMP)
	$(BIN)/python setup.py -q build_protos

.PHONY: lint
lint: $(STAMP) $(PROTO_PY)
	$(BIN)/ruff check mlkube tests bench setup.py
	$(BIN)/ruff format --check mlkube tests bench setup.py
	$(BIN)/mypy --strict mlkube

# The C tests under the sanitizers, then the fuzz target for a bounded time (FUZZ_SECONDS,
# 25 by default; `make fuzz FUZZ_SECONDS=600` fuzzes longer on its own).
.PHONY: native-check
native-check: $(DEBS_STAMP)
	$(MAKE) -C native check fuzz

.PHONY: fuzz
fuzz: $(DEBS_STAMP)
	$(MAKE) -C native fuzz

.PHONY: test
test: $(DEBS_STAMP) $(HELM) lint native native-check e2e-build storage-build cluster-build
	$(BIN)/pytest $(PYTEST_ARGS)

# versitygw, the S3-compatible server `mlkube fetch` is tested against
# (tests/integration/storage): built once per machine from the Go module proxy, cached
# outside the repository by version.
.PHONY: storage-build
storage-build:
	./scripts/install-versitygw >/dev/null

# kube-apiserver, kubectl and etcd for the e2e tier (tests/e2e): built once per
# machine from the Go module proxy, cached outside the repository by version.
.PHONY: e2e-build
e2e-build:
	./scripts/e2e-build >/dev/null

# The cluster tier's node binaries, CoreDNS, the sandbox and base images, and the project's
# image from its own Dockerfile: built once per machine (the project image again when its
# sources change), cached outside the repository.
.PHONY: cluster-build
cluster-build: $(DEBS_STAMP)
	./scripts/cluster-build >/dev/null

# A real single-node cluster for hands-on use: the operator's image is already on the node
# (ghcr.io/mlkube/mlkube:<version>); prints the kubeconfig, Ctrl-C stops and cleans up.
.PHONY: cluster
cluster: $(STAMP) cluster-build
	$(BIN)/python tests/cluster/cluster.py

# A real control plane on loopback for hands-on use; prints the kubeconfig, Ctrl-C stops it.
.PHONY: e2e-cluster
e2e-cluster: $(STAMP) e2e-build
	$(BIN)/python tests/e2e/controlplane.py

.PHONY: bench
bench: $(DEBS_STAMP) native
	$(BIN)/python bench/sampler.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/onnx_serve.py

# The serving runtime on the embedded default: the demo bandit model ("bandit") with the
# in-process feature store, one worker, on 127.0.0.1:$(PORT) (gRPC: $(GRPC_PORT)). Ctrl-C
# stops it.
PORT ?= 8080
GRPC_PORT ?= 8081
.PHONY: run
run: $(STAMP) native
	@echo "mlkube serve on http://127.0.0.1:$(PORT) (model 'bandit', in-process store). Try:"
	@echo "  curl -s localhost:$(PORT)/v2/health/ready"
	@echo "  curl -s localhost:$(PORT)/v2/models/bandit"
	@echo "  curl -s -X POST localhost:$(PORT)/v2/models/bandit/infer -d '{\"inputs\":[{\"name\":\"items\",\"datatype\":\"BYTES\",\"shape\":[3],\"data\":[\"a\",\"b\",\"c\"]}],\"parameters\":{\"top_k\":2}}'"
	@echo "  curl -s -X POST localhost:$(PORT)/v1/models/bandit:feedback -d '{\"feedback\":[{\"item\":\"b\",\"reward\":1},{\"item\":\"a\",\"reward\":0}]}'"
	@echo "  curl -s -X POST localhost:$(PORT)/v1/models/bandit:predict -d '{\"instances\":[\"a\",\"b\",\"c\"]}'"
	@echo "  curl -s localhost:$(PORT)/metrics | grep ^mlkube_"
	@echo "OIP v2 over gRPC on 127.0.0.1:$(GRPC_PORT) (docs/serving.md, gRPC), e.g.:"
	@echo "  grpcurl -plaintext -import-path mlkube/serving/grpc -proto inference.proto -d '{\"name\":\"bandit\"}' localhost:$(GRPC_PORT) inference.GRPCInferenceService/ModelMetadata"
	MLKUBE_LOG_FORMAT=text $(BIN)/python -m mlkube serve --host 127.0.0.1 --port $(PORT) --grpc-port $(GRPC_PORT) --workers 1

.PHONY: clean
clean:
	rm -rf build dist *.egg-info mlkube/libbetadist.so native/build .pytest_cache .mypy_cache .ruff_cache
	rm -f $(PROTOS:.proto=_pb2.py) $(PROTOS:.proto=_pb2.pyi) $(PROTOS:.proto=_pb2_grpc.py)

# syntax=docker/dockerfile:1
#
# The one mlkube image: `mlkube operator` (control plane) and `mlkube serve` (model server).
#
#   docker build -t ghcr.io/mlkube/mlkube:$(python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])') .
#
# Two stages so that no compiler reaches the runtime image. The build stage installs the
# project with `pip install .`, the same path `make` takes (`pip install -e .`): setuptools
# runs setup.py's build_ext, which compiles native/betadist.c and native/score.c into
# mlkube/libbetadist.so with the flags in setup.py, and its build_py, which generates the
# gRPC modules from mlkube/serving/grpc/inference.proto with grpcio-tools (a build
# requirement in pyproject.toml). The runtime stage copies the finished virtual environment
# only.
#
# No HEALTHCHECK on purpose: Kubernetes ignores it; the operator's liveness probe
# (:8081/healthz) and the model server's /v2/health/{live,ready} probes do that job.
# (`mlkube serve` also listens on 8081, for gRPC: the two never run in the same container.)

ARG PYTHON_VERSION=3.11
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------- build
# The full python image already carries gcc and the libc headers that build_ext needs.
FROM python:${PYTHON_VERSION}-${DEBIAN_RELEASE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# .dockerignore lets in only what the build needs (pyproject, setup.py, README, native/,
# mlkube/) and keeps out any libbetadist.so built on the host.
COPY . .

# The smoke check runs with -P: in /src the copied source tree (which has no compiled
# libbetadist.so and no generated gRPC modules) would otherwise come first on sys.path and
# shadow the installed package.
# `fast` adds uvloop, the event loop the serving runtime uses when it is present.
# onnxruntime (format onnx, CPU) comes in as a dependency of the project; a GPU image
# installs onnxruntime-gpu in its place (same module, with the CUDA execution provider).
RUN python -m venv /opt/mlkube \
    && /opt/mlkube/bin/pip install --no-cache-dir ".[fast]" \
    && /opt/mlkube/bin/mlkube version \
    && /opt/mlkube/bin/python -P -c "import numpy as np; from mlkube.native import BetaSampler; from mlkube.serving.grpc import inference_pb2, inference_pb2_grpc; import onnxruntime; print(BetaSampler(seed=1).sample(np.ones(4), np.ones(4)))"

# -------------------------------------------------------------------------- runtime
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime

ARG VERSION=0.0.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="mlkube" \
      org.opencontainers.image.description="Kubernetes operator and serving runtime for machine-learning model services and distributed PyTorch training" \
      org.opencontainers.image.source="https://github.com/mlkube/mlkube" \
      org.opencontainers.image.url="https://github.com/mlkube/mlkube" \
      org.opencontainers.image.documentation="https://github.com/mlkube/mlkube/blob/main/docs/install.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="mlkube" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

COPY --from=build /opt/mlkube /opt/mlkube

# Writes go to /tmp only (the pods mount an emptyDir there and keep the root filesystem
# read-only); HOME points there too so that no library tries to write under /.
ENV PATH=/opt/mlkube/bin:${PATH} \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A numeric non-root user, so that `runAsNonRoot: true` can be verified by the kubelet
# without an /etc/passwd entry. 65532 is the conventional "nonroot" id of distroless images.
USER 65532:65532
WORKDIR /tmp

EXPOSE 8080 8081
ENTRYPOINT ["mlkube"]
CMD ["serve"]

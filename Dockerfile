# The scoring service's images. One image runs the API (`aqa serve`) and the workers (`aqa worker`).
#
#   docker build -t aqa:cpu .                  CPU image (default target)
#   docker build --target gpu -t aqa:gpu .     GPU image: CUDA runtime base, CUDA torch, onnxruntime-gpu
#
# Uploads (and, in embedded mode, the jobs database) live in /data: mount one volume there, shared by the
# API and the workers. The bundled demo model is installed with the package (models/demo).

ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS cpu

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AQA_HOST=0.0.0.0 AQA_PORT=8000 AQA_DATA_DIR=/data
WORKDIR /app

# torch first, from the CPU wheel index, so the project's dependency on it does not pull a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY aqa aqa
COPY video video
COPY models models
COPY exemplar_bank exemplar_bank
COPY training training
COPY workers workers
COPY service service
RUN pip install . \
    && useradd --create-home --uid 1000 aqa && mkdir -p /data && chown aqa /data

USER aqa
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
CMD ["aqa", "serve"]

# ---------------------------------------------------------------------------------------------------
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 AS gpu

# PYTORCH_NVML_BASED_CUDA_CHECK: torch.cuda.is_available() asks NVML instead of initialising the CUDA
# driver, so even a stray check in the worker's (forking) parent cannot break CUDA in its pool processes.
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AQA_HOST=0.0.0.0 AQA_PORT=8000 AQA_DATA_DIR=/data PATH=/opt/venv/bin:$PATH PYTORCH_NVML_BASED_CUDA_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv
WORKDIR /app

# The CUDA build of torch matching the base image's CUDA runtime.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX_URL}

COPY pyproject.toml README.md ./
COPY aqa aqa
COPY video video
COPY models models
COPY exemplar_bank exemplar_bank
COPY training training
COPY workers workers
COPY service service
# onnxruntime-gpu replaces the CPU onnxruntime (both install the `onnxruntime` module).
RUN pip install . \
    && pip uninstall -y onnxruntime && pip install onnxruntime-gpu \
    && useradd --create-home --uid 1000 aqa && mkdir -p /data && chown aqa /data

USER aqa
VOLUME /data
CMD ["aqa", "worker", "--concurrency", "1"]

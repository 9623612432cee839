# syntax=docker/dockerfile:1
# Three images from one file, one target each (multi-stage):
#   docker build --target api -t ganforge-api .                 # the API and `ganforge migrate`: no torch
#   docker build --target worker-cpu -t ganforge-worker-cpu .   # a training worker, torch for CPUs
#   docker build --target worker-cuda -t ganforge-worker-cuda . # a training worker, torch built for CUDA
# Pick another CUDA build of torch with --build-arg TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu126.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS source
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 GANFORGE_DATA_DIR=/data
WORKDIR /app
RUN useradd --create-home ganforge && mkdir -p /data && chown ganforge /data
COPY pyproject.toml README.md ./
COPY models models
COPY api api
COPY worker worker
COPY migrations migrations
COPY ganforge ganforge

# The API (and migrations): FastAPI, SQLAlchemy, Celery's client; never torch (the API does not import it).
FROM source AS api
RUN pip install '.[api,s3]'
USER ganforge
EXPOSE 8000
CMD ["ganforge", "api", "--host", "0.0.0.0", "--port", "8000"]

# A training worker on CPUs: torch's CPU wheels first (pip would otherwise fetch the CUDA build, ~3 GB more).
FROM source AS worker-cpu
ARG TORCH=torch==2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
RUN pip install "$TORCH" --index-url "$TORCH_CPU_INDEX"
RUN pip install '.[worker,s3,mlflow]'
USER ganforge
CMD ["ganforge", "worker"]

# A training worker on GPUs: one job at a time, so run one container (or one worker process) per GPU.
FROM source AS worker-cuda
ARG TORCH=torch==2.13.0
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu124
RUN pip install "$TORCH" --index-url "$TORCH_CUDA_INDEX"
RUN pip install '.[worker,s3,mlflow]'
USER ganforge
CMD ["ganforge", "worker", "--queue", "gpu"]

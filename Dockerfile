# One image for the API and the workers: `.[all,s3]` (the API alone needs only `.[api,s3]`, no torch:
# a smaller API image would install that and skip the torch step). Build for GPUs with:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
FROM python:3.11-slim
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 GANFORGE_DATA_DIR=/data
WORKDIR /app
RUN pip install "$TORCH" --index-url "$TORCH_INDEX"
COPY pyproject.toml README.md ./
COPY models models
COPY api api
COPY worker worker
COPY migrations migrations
COPY ganforge ganforge
RUN pip install '.[all,s3]'
RUN useradd --create-home ganforge && mkdir -p /data && chown ganforge /data
USER ganforge
EXPOSE 8000
CMD ["ganforge", "api", "--host", "0.0.0.0", "--port", "8000"]

# latent morph web service: the Gradio page and API on 0.0.0.0:7860, bundled models, CPU torch.
# GPU variant (see README): docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 ...
# The same image is a Ray node for `--backend ray` (README: Serving on Ray): ray[serve] comes with requirements.txt.
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    HF_HOME=/data/huggingface \
    LATENT_MORPH_CACHE=/data/latent-morph

# uid 1000: files written to the volumes belong to the usual first user of the host
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin morph \
    && mkdir -p /data/huggingface /data/latent-morph \
    && chown morph:morph /data/huggingface /data/latent-morph

WORKDIR /app

# torch first, from its own index, so requirements.txt cannot pull a second (CUDA) build
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY requirements.txt requirements-openvino.txt ./
RUN pip install --no-cache-dir -r requirements.txt
# the CPU image runs the bundled models' UNet with OpenVINO, the fastest exact CPU setting measured
# (README: Speed settings); a GPU build leaves it out with --build-arg OPENVINO=0
ARG OPENVINO=1
RUN if [ "${OPENVINO}" = "1" ]; then pip install --no-cache-dir -r requirements-openvino.txt; fi

# the code and the bundled models (pipelines/toy/scenes, the default, and shapes64); root-owned, read-only
COPY pipelines ./pipelines
COPY service ./service

USER 1000:1000
# downloaded models; rendered frames (the frame cache, capped by LATENT_MORPH_FRAME_CACHE_MB)
VOLUME ["/data/huggingface", "/data/latent-morph"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/gradio_api/app_id', timeout=4)"]
CMD ["python", "-m", "service"]

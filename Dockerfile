# One image for every convcg component; docker-compose.yml picks the command per service.
# (Not built on the development machine: it has no Docker engine. Building needs internet for
# the PyTorch CPU wheel index and PyPI.)
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app

# torch first, from the CPU-only index (the project pins torch>=2.13,<2.14)
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# dependencies before sources, so a code change does not reinstall them
COPY pyproject.toml README.md ./
RUN mkdir -p convcg streams features training registry index_refresher retrieval loop \
    && pip install . && pip uninstall -y convcg

COPY convcg ./convcg
COPY streams ./streams
COPY features ./features
COPY training ./training
COPY model ./model
COPY registry ./registry
COPY index_refresher ./index_refresher
COPY retrieval ./retrieval
COPY loop ./loop
RUN pip install --no-deps .

# every component keeps its state under ./var (a shared volume in docker-compose.yml)
RUN mkdir -p /app/var
VOLUME ["/app/var"]

ENTRYPOINT ["convcg"]
CMD ["--help"]

# The trainer image: `streamrec train` against the Kafka and Redis of docker-compose.yml.
# Pinned base (a moving tag would change Python under a passing test suite).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /src
# Only what the package build needs (tests, docs and the local-services cache stay out; see
# .dockerignore), so editing a test does not rebuild the TensorFlow layer.
COPY pyproject.toml README.md ./
COPY streaming ./streaming
COPY model ./model
COPY consumers ./consumers
RUN pip install . \
 && useradd --create-home --uid 10001 streamrec \
 && mkdir -p /data \
 && chown streamrec /data

USER streamrec
WORKDIR /data
ENV STREAMREC_TRAINER_CHECKPOINT_DIR=/data/checkpoints
VOLUME ["/data"]
CMD ["streamrec", "train"]

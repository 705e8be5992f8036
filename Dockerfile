# batchq API (and, with another command, a worker: the image has the SDK too).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BATCHQ_HOST=0.0.0.0 \
    BATCHQ_PORT=8000

WORKDIR /srv/batchq

# The SDK first (the `batchq` command, the worker runtime), then the server, which depends on it.
COPY clients/python ./clients/python
RUN pip install ./clients/python
COPY pyproject.toml ./
COPY app ./app
RUN pip install .

COPY examples ./examples
# The Alembic migrations ship inside the package (app/migrations); PYTHONPATH only makes
# the example worker registry importable.
ENV PYTHONPATH=/srv/batchq

RUN useradd --system --uid 10001 --home-dir /srv/batchq batchq && chown -R batchq /srv/batchq
USER batchq

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

CMD ["batchq", "serve", "--host", "0.0.0.0"]

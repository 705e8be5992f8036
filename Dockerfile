# batchq: the API (`batchq serve`, the default command) and, with another command, a worker:
# the image holds the SDK (`batchq worker`) and the example registry (examples/).
#
#   docker build -t batchq .
#   docker run -p 8000:8000 batchq                                  # SQLite in /var/lib/batchq
#   docker run batchq batchq worker examples.registry:registry --api-url http://api:8000
#
# The base is an exact release, so a rebuild gives the same Python; move it on deliberately
# (for a security fix, say) and rebuild. Both stages must use the same one.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- builder: wheels of the SDK, the server and every dependency ---------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY clients/python ./clients/python
COPY pyproject.toml ./
COPY app ./app
COPY migrations ./migrations
# The SDK (distribution batchq) and the server (batchq-server, which requires it) first, then
# their dependencies. Naming the two wheels as files makes pip take `batchq` from here: an
# unrelated old project has that name on PyPI.
RUN pip wheel --no-deps --wheel-dir /wheels ./clients/python . \
 && pip wheel --wheel-dir /wheels /wheels/batchq-*.whl /wheels/batchq_server-*.whl

# ---- runtime: only those wheels, installed in a venv, run by a user without privileges -----
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/batchq/bin:$PATH \
    BATCHQ_HOST=0.0.0.0 \
    BATCHQ_PORT=8000 \
    BATCHQ_DATABASE_URL=sqlite+aiosqlite:////var/lib/batchq/batchq.db

COPY --from=builder /wheels /tmp/wheels
RUN python -m venv /opt/batchq \
 && /opt/batchq/bin/pip install --no-index --find-links /tmp/wheels batchq-server 'batchq[redis]' \
 && rm -rf /tmp/wheels \
 && useradd --system --user-group --uid 10001 --home-dir /srv/batchq --shell /usr/sbin/nologin batchq \
 && mkdir -p /var/lib/batchq && chown batchq:batchq /var/lib/batchq

# The worker imports `examples.registry` from its working directory (read-only for the user).
WORKDIR /srv/batchq
COPY examples ./examples

USER batchq
EXPOSE 8000
# Liveness of the process; docker-compose.yml asks /readyz (the store and the broker answer).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BATCHQ_PORT', '8000'), timeout=2)"]

CMD ["batchq", "serve"]

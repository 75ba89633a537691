# syntax=docker/dockerfile:1
# master-server image: a build stage that installs the package into a virtualenv,
# and a slim runtime stage that only copies that virtualenv.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim AS runtime
RUN useradd --system --uid 10001 --home-dir /var/lib/master master \
    && mkdir -p /var/lib/master && chown master /var/lib/master
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MASTER_HOST=0.0.0.0 \
    MASTER_PORT=8080 \
    MASTER_DATABASE_URL=sqlite:////var/lib/master/master.db
USER master
WORKDIR /var/lib/master
VOLUME ["/var/lib/master"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('MASTER_PORT') or '8080'; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status != 200)"]
# master-server migrates the database, then serves.
CMD ["master-server"]

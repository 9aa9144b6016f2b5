# syntax=docker/dockerfile:1
# Multi-stage: build the project's wheel (the connector only: no sandbox code in it),
# install it (with the PostgreSQL driver) into a virtual environment, and copy only that
# environment into a slim runtime image (the last stage, the default target) that runs as
# a non-root user. The `sandbox` stage is compose's sandbox service, never the product.
# No secrets are baked in: they come from the environment or from mounted secret files
# (CONNECTOR_SECRETS_DIR) at run time; .dockerignore keeps .env, .connector/ (tokens,
# state) and the local virtualenv out of the build context.
# tests/container/test_container_smoke.py performs these same steps without Docker.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY connector ./connector
# connector/mappings_default/ links to these: the wheel ships them as the defaults
COPY mappings ./mappings
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir "$(ls /wheels/*.whl)[postgres]"

# The sandbox (compose.yaml builds this target for its sandbox service): the same wheel
# with the `sandbox` extra's dependencies, and sandbox/ on the path beside it.
FROM python:3.11-slim AS sandbox
RUN groupadd --system --gid 10001 connector \
 && useradd --system --uid 10001 --gid connector --home-dir /app --shell /usr/sbin/nologin connector
COPY --from=build /wheels /wheels
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir "$(ls /wheels/*.whl)[sandbox]"
WORKDIR /app
COPY --chown=connector:connector sandbox ./sandbox
# /shared: where the sandbox writes its CA file for the daemon to trust
RUN mkdir -p /shared && chown connector:connector /shared
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app
USER connector
EXPOSE 8700
ENTRYPOINT ["connector"]
CMD ["sandbox", "--host", "0.0.0.0", "--allow-remote"]

# The production image: the connector's wheel and its runtime dependencies only.
FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 connector \
 && useradd --system --uid 10001 --gid connector --home-dir /app --shell /usr/sbin/nologin connector
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=connector:connector mappings ./mappings
COPY --chown=connector:connector config ./config
# /data: the state file (a volume); /shared: where the compose sandbox writes its CA file
RUN mkdir -p /data /shared && chown connector:connector /data /shared
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CONNECTOR_STATE_URL=sqlite:////data/state.db \
    CONNECTOR_CONFIG=/app/config/sandbox.yaml \
    CONNECTOR_HEALTH_HOST=0.0.0.0 \
    CONNECTOR_HEALTH_PORT=9464 \
    CONNECTOR_LOG_FORMAT=json
USER connector
VOLUME ["/data"]
EXPOSE 9464
# /healthz: the process and its scheduler are alive (readiness is /readyz, for orchestrators)
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('CONNECTOR_HEALTH_PORT', '9464'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["connector"]
CMD ["run"]

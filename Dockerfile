# syntax=docker/dockerfile:1
# Multi-stage: build a wheel, install it into a virtual environment, copy that into a
# slim runtime image that runs as a non-root user. No secrets are baked in: they come
# from the environment or mounted secret files at run time.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY connector ./connector
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir '.[postgres]'

FROM python:3.11-slim
RUN groupadd --system --gid 10001 connector \
 && useradd --system --uid 10001 --gid connector --home-dir /app --shell /usr/sbin/nologin connector
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=connector:connector mappings ./mappings
COPY --chown=connector:connector config ./config
RUN mkdir -p /data && chown connector:connector /data
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
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["connector"]
CMD ["run"]

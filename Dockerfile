# RhinoBox in a container: the same `rhinobox serve` that scripts/serve.sh runs, as a non-root user,
# with the data directory (blobs, spool, SQLite catalog) on the /data volume.
#
#   docker build -t rhinobox .
#   docker run -d --name rhinobox -p 8090:8090 -v rhinobox-data:/data --stop-timeout 65 rhinobox
#
# --stop-timeout: Docker's default 10 s is shorter than RHINOBOX_SHUTDOWN_TIMEOUT (30 s), the time
# uploads in flight get to finish after SIGTERM (twice that, plus a margin: see docs/deploy.md).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libmagic1: MIME sniffing (python-magic loads it at run time); libre2-9 and libhyperscan5: the compiled
# type-detection filter (this image is amd64: Debian builds Hyperscan for it only).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 libre2-9 libhyperscan5 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/rhinobox
COPY pyproject.toml setup.py README.md ./
COPY rhinobox ./rhinobox
# g++ and the headers only while pip builds the compiled filter (rhinobox/ingest/magic_*.cc).
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ libre2-dev libhyperscan-dev \
    && pip install . && rm -rf /opt/rhinobox/build \
    && apt-get purge -y --auto-remove g++ libre2-dev libhyperscan-dev \
    && rm -rf /var/lib/apt/lists/*

# The web page, built from web/ with the npm packages its lockfile names; Node.js only for the build.
COPY web/package.json web/package-lock.json web/build.mjs ./web/
COPY web/src ./web/src
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && (cd web && npm ci --no-audit --no-fund && npm run build) \
    && rm -rf web/node_modules /root/.npm \
    && apt-get purge -y --auto-remove nodejs npm \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 rhinobox \
    && useradd --system --uid 10001 --gid rhinobox --home-dir /data --no-create-home --shell /usr/sbin/nologin rhinobox \
    && mkdir -p /data \
    && chown rhinobox:rhinobox /data

ENV RHINOBOX_ADDR=0.0.0.0:8090 \
    RHINOBOX_DATA_DIR=/data \
    RHINOBOX_WEB_DIR=/opt/rhinobox/web/dist
VOLUME ["/data"]
EXPOSE 8090
USER rhinobox:rhinobox
WORKDIR /data

# /healthz answers 200 when the catalog answers and the data dir is writable; the port follows RHINOBOX_ADDR.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ['RHINOBOX_ADDR'].rpartition(':')[2]; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

STOPSIGNAL SIGTERM
CMD ["rhinobox", "serve"]

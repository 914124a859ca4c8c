# hipchat-addon: the add-on server, one uvicorn process serving port 8000.
#
#   docker build -t hipchat-addon .
#   docker run --rm -p 8000:8000 hipchat-addon
#
# Standalone it keeps its state in SQLite under /data (mount a volume there to keep it);
# docker-compose.yml points ADDON_STORE_URL at Redis instead.

# --- build: turn the source into a wheel (the build backend stays in this stage) ---------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# hatchling reads README.md for the package metadata, so it is part of the build input.
COPY pyproject.toml README.md ./
COPY addon/ addon/
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime ---------------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 addon \
    && useradd --system --uid 10001 --gid addon --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin addon \
    && install --directory --owner=addon --group=addon --mode=0750 /data

WORKDIR /app

# Dependencies first, read from pyproject.toml: this layer is rebuilt only when pyproject.toml
# changes, not on every code change.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt

# The package itself (non-editable), then a check that every dependency it declares is installed.
COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-deps /tmp/wheels/*.whl \
    && pip check \
    && rm -rf /tmp/wheels

# Declarative parts of the descriptor and the integration modules. Owned by root: the server
# reads them and must not be able to change them.
COPY capabilities/ /app/capabilities/
COPY integrations/ /app/integrations/

ENV ADDON_CAPABILITIES_PATH=/app/capabilities \
    ADDON_INTEGRATIONS_PATH=/app/integrations \
    ADDON_STORE_URL=sqlite:////data/addon.db \
    ADDON_STORAGE_FILES_PATH=/data/storage-files

USER addon:addon

EXPOSE 8000

# /healthz answers 200 while the process is up; slim images have no curl, so ask Python.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["hipchat-addon", "serve", "--host", "0.0.0.0", "--port", "8000"]

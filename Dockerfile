# The inference server for one exported bundle (python main.py serve --bundle): the deployment case.
# No workspace, no training: the bundle is mounted read-only and checked (signature, every file's
# SHA-256, the ONNX graph against its card) before the first request.
#
#   docker build -t medanomaly-serve .
#   docker run --rm -p 127.0.0.1:8765:8765 -e MEDANOMALY_TOKEN="$(openssl rand -hex 32)" \
#       -v "$PWD/exports/RUN:/bundle:ro" \
#       -v "$PWD/data/signing_key.pub.pem:/workspace/data/trusted_keys/workstation.pem:ro" \
#       medanomaly-serve
#
# The second volume makes the workstation's signing key trusted inside the container; without it
# the bundle is refused (or add --trust-unsigned to the command, knowing where the bundle came from).
# Every request needs 'Authorization: Bearer $MEDANOMALY_TOKEN' (the server listens on 0.0.0.0 inside).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 MEDANOMALY_WORKSPACE=/workspace

WORKDIR /opt/medanomaly
COPY requirements.txt .
# The same packages the tests run with (the model itself runs in ONNX Runtime)
RUN pip install -r requirements.txt

COPY main.py pyproject.toml README.md ./
COPY core core
COPY models models
COPY app app
COPY menus menus
COPY web web

RUN useradd --create-home --uid 10001 medanomaly \
    && mkdir -p /workspace/data/trusted_keys && chown -R medanomaly /workspace
USER medanomaly

EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/api/v1/health', timeout=4)"
ENTRYPOINT ["python", "main.py", "serve", "--bundle", "/bundle", "--host", "0.0.0.0", "--port", "8765"]

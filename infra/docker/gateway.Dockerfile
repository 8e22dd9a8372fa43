# The course gateway (python -m labs.gateway) as an image. Build from the repository root:
#   docker build -f infra/docker/gateway.Dockerfile -t vllm-serving-labs-gateway:0.1.0 .
# compose builds it by itself; for Kubernetes push it to your registry (infra/README.md).
FROM python:3.11.14-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY infra/docker/gateway-requirements.txt /tmp/gateway-requirements.txt
RUN pip install -r /tmp/gateway-requirements.txt

# The package itself without its notebook dependencies (see gateway-requirements.txt).
COPY pyproject.toml README.md ./
COPY labs ./labs
RUN pip install --no-deps .

# Nothing here needs root.
USER 65532:65532
EXPOSE 8001
ENTRYPOINT ["python", "-m", "labs.gateway"]
CMD ["--upstream=http://vllm:8000", "--host=0.0.0.0", "--port=8001"]

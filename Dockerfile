# tuned-proxy: the proxy on 0.0.0.0:8080, as a non-root user, client keys required.
#
#   docker build -t tuned-proxy .
#   docker run --rm -p 8080:8080 -e TUNED_PROXY_KEYS=sk-app-1 tuned-proxy
#
# The image ships the example config (routes on the built-in mock upstream) at
# /etc/tuned-proxy/tuned-proxy.yaml; mount your own config folder over /etc/tuned-proxy.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# Build stage: install the project into a virtualenv, the way the README does. Only the virtualenv
# moves on, so neither the sources nor the build tools reach the final image.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/tuned-proxy
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY policies ./policies
RUN python -m venv "$VIRTUAL_ENV" && "$VIRTUAL_ENV/bin/pip" install .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tuned-proxy" \
      org.opencontainers.image.description="OpenAI-compatible proxy for fine-tuned chat models" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 tuned-proxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin tuned-proxy
COPY --from=build /opt/tuned-proxy /opt/tuned-proxy
# The default config: the example config and its policies, owned by root and read-only to the
# proxy. A mounted /etc/tuned-proxy replaces all of it.
COPY policies/ /etc/tuned-proxy/
COPY policies/tuned-proxy.example.yaml /etc/tuned-proxy/tuned-proxy.yaml
ENV PATH=/opt/tuned-proxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["tuned-proxy"]
CMD ["serve", "--config", "/etc/tuned-proxy/tuned-proxy.yaml", "--host", "0.0.0.0", "--port", "8080"]

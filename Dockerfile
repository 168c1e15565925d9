# syntax=docker/dockerfile:1
#
# One image for every promptcache process: the injected sidecar (`promptcache sidecar`)
# and the operator (`promptcache operator`); the chart and the webhook pass the
# subcommand as args. Two stages: the first builds wheels for the project and all its
# dependencies, the second only installs them -- no compiler, no pip, no source tree in
# the final image, and it runs as the unprivileged user 65532 that the chart's and the
# injected sidecar's securityContext expect (runAsNonRoot, readOnlyRootFilesystem).
#
#   docker build -t ghcr.io/promptcache/promptcache:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY promptcache ./promptcache
COPY operator ./operator
# The project's wheel plus a wheel of every dependency. All of them publish manylinux
# wheels for CPython 3.11; if one ever did not, this step fails here (there is no
# compiler in the slim image) instead of shipping a build toolchain.
RUN pip wheel --wheel-dir /wheels --only-binary=:all: --no-binary=promptcache -c constraints.txt . \
 && ls /wheels/promptcache-*.whl

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="promptcache" \
      org.opencontainers.image.description="LLM prompt caching sidecar and PromptPolicy operator" \
      org.opencontainers.image.source="https://github.com/promptcache/promptcache" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels promptcache \
 && pip uninstall --yes pip setuptools wheel \
 && promptcache --help >/dev/null
# 65532 is the "nonroot" user of distroless images; no home directory, no shell login.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8787 9787 9443 8080
ENTRYPOINT ["promptcache"]
CMD ["--help"]

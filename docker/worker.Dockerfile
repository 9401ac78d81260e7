# The worker image. TORCH_INDEX picks the build: cpu (default) or e.g. cu128 on GPU hosts.
#
# Build stage: the wheel (see service.Dockerfile); the image installs it with the worker
# extra and no benchmark or test extras.
FROM python:3.11-slim AS wheel
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY hpo_service ./hpo_service
COPY migrations ./migrations
RUN pip wheel --no-deps -w /dist .

FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY --from=wheel /dist /dist
RUN pip install "$(ls /dist/hpo_service-*.whl)[worker]" && rm -rf /dist
# Run as a user of its own: training commands started by the worker run as it too.
RUN useradd --create-home --uid 10001 hpo
USER hpo
ENV HOME=/home/hpo
WORKDIR /home/hpo
# Server, key and study come from HPO_SERVER, HPO_API_KEY and HPO_STUDY (compose sets them).
CMD ["sh", "-c", "hpo worker --server \"$HPO_SERVER\" --key \"$HPO_API_KEY\" --study \"$HPO_STUDY\" --proxy \"${HPO_PROXY:-mlp}\""]

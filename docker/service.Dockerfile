# The API image: CPU torch (the service fits GPs on the CPU), migrations applied on start.
#
# Build stage: the wheel, which carries migrations/ inside the package. The image installs
# that wheel, not the source tree, so it runs exactly what `pip install hpo_service` would.
FROM python:3.11-slim AS wheel
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY hpo_service ./hpo_service
COPY migrations ./migrations
RUN pip wheel --no-deps -w /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# CPU wheel of torch first, so the project's `torch>=2.2` never pulls a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --from=wheel /dist /dist
# The server's dependencies only: no worker, benchmark or test extras.
RUN pip install /dist/hpo_service-*.whl && rm -rf /dist
# Run as a user of its own. Its config directory is made here, owned by it, so the
# compose volume mounted there (the generated key-hash secret) starts writable.
RUN useradd --create-home --uid 10001 hpo && install -d -o hpo -g hpo /home/hpo/.config/hpo
USER hpo
ENV HOME=/home/hpo
WORKDIR /home/hpo
EXPOSE 8000
# `hpo serve` migrates before it listens; HPO_DATABASE_URL comes from the environment.
CMD ["hpo", "serve", "--host", "0.0.0.0", "--port", "8000"]

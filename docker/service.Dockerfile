# The API image: CPU torch (the service fits GPs on the CPU), migrations applied on start.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# CPU wheel of torch first, so the project's `torch>=2.2` never pulls a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md alembic.ini ./
COPY hpo_service ./hpo_service
COPY migrations ./migrations
RUN pip install -e .
EXPOSE 8000
# `hpo serve` migrates before it listens; HPO_DATABASE_URL comes from the environment.
CMD ["hpo", "serve", "--host", "0.0.0.0", "--port", "8000"]

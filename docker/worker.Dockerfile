# The worker image. TORCH_INDEX picks the build: cpu (default) or e.g. cu128 on GPU hosts.
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX}
COPY pyproject.toml README.md alembic.ini ./
COPY hpo_service ./hpo_service
COPY migrations ./migrations
RUN pip install -e .
# Server, key and study come from HPO_SERVER, HPO_API_KEY and HPO_STUDY (compose sets them).
CMD ["sh", "-c", "hpo worker --server \"$HPO_SERVER\" --key \"$HPO_API_KEY\" --study \"$HPO_STUDY\" --proxy \"${HPO_PROXY:-mlp}\""]

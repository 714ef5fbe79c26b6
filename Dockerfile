# One image for every role; the command picks it:
#   docker run ptbot serve                 webhook server (GitHub App)
#   docker run ptbot worker --queues gpu   Celery scoring worker
#   docker run -v $PWD:/src -w /src ptbot review
# CPU by default. For GPU workers:
#   docker build --build-arg TORCH_SPEC="torch==2.13.0" --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t ptbot:gpu .
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ptbot
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} "${TORCH_SPEC}"
COPY pyproject.toml README.md ./
COPY analyzer analyzer
COPY lab lab
COPY miners miners
COPY bot bot
COPY workers workers
COPY ptbot ptbot
COPY templates templates
RUN pip install --no-cache-dir '.[postgres]'

# Dequantize the embedded supervisor at build time, so containers start in seconds.
ENV PTBOT_CACHE_DIR=/var/cache/ptbot HF_HUB_OFFLINE=1
RUN python -c "from pathlib import Path; from analyzer.supervisor import Supervisor, SupervisorConfig; Supervisor.load(SupervisorConfig(cache_dir=Path('/var/cache/ptbot')))"

RUN useradd --system --home /nonexistent ptbot && chown -R ptbot /var/cache/ptbot
USER ptbot
EXPOSE 8080
ENTRYPOINT ["ptbot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]

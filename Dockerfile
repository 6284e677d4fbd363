# tuneforge serve in a container: the OpenAI-compatible API and the chat page on port 8000.
#
# Build and run on any machine (CPU):
#   docker build -t tuneforge .
#   docker run --rm -p 127.0.0.1:8000:8000 -e TUNEFORGE_API_KEY=change-me \
#     -v "$PWD/results:/results:ro" -v tuneforge-cache:/cache tuneforge
# or, with compose.yaml next to this file:  TUNEFORGE_API_KEY=change-me docker compose up --build
#
# The server listens on 0.0.0.0 inside the container, so it refuses to start without an API key
# (TUNEFORGE_API_KEY). Clients send it as "Authorization: Bearer <key>".
# The first start converts the embedded SmolLM2 model into /cache (about 20 s, once per volume).
# An adapter trained on a local model folder needs that folder too: mount it and add
# --model /models/NAME to the command.
#
# CUDA variant: the same file. PyTorch's CUDA wheels bring their own CUDA libraries, so only the
# host's NVIDIA driver and the NVIDIA Container Toolkit are needed:
#   docker build -t tuneforge:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   docker run --rm --gpus all -p 127.0.0.1:8000:8000 -e TUNEFORGE_API_KEY=change-me \
#     -v "$PWD/results:/results:ro" tuneforge:cuda
# (in compose.yaml: set build.args.TORCH_INDEX_URL and add deploy.resources.reservations.devices)

ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

# CPU wheels by default: plain PyPI would pull the multi-GB CUDA build of torch on Linux.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV TUNEFORGE_VENV=/opt/tuneforge-venv \
    TUNEFORGE_CACHE=/cache \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
ENV PATH="${TUNEFORGE_VENV}/bin:${PATH}"

WORKDIR /app
COPY pyproject.toml run.sh README.md ./
COPY src ./src
# Installed exactly as the README tells users: ./run.sh setup (torch first, then tuneforge).
RUN TORCH_INDEX_URL="${TORCH_INDEX_URL}" ./run.sh setup

RUN useradd --create-home --uid 1000 tuneforge && mkdir -p /cache /results && chown tuneforge /cache
USER tuneforge
VOLUME ["/cache"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"

ENTRYPOINT ["tuneforge"]
CMD ["serve", "--adapter", "/results", "--host", "0.0.0.0", "--port", "8000"]

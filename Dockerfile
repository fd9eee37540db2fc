# The fraudops project image: base image of every pipeline component and of the model server.
#   docker build -t ghcr.io/fraudops/fraudops:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/fraudops
COPY pyproject.toml README.md ./
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
COPY monitoring ./monitoring
COPY fraudops ./fraudops
# numba's compiled kernels (window features, tree walks, reason ranking) are cached at build
# time where the server's user may write (components/jit.py falls back to $TMPDIR on a
# read-only filesystem); compile from / so that the installed package, not this folder's
# copy, is the one cached
ENV NUMBA_CACHE_DIR=/opt/fraudops/numba-cache
RUN pip install --no-cache-dir . \
    && useradd --uid 1000 --create-home fraudops \
    && cd / && python -c "from components.scoring import compile_kernels; compile_kernels()" \
    && chown -R 1000 /opt/fraudops/numba-cache

USER 1000
WORKDIR /home/fraudops
# The model server is the default; pipeline components override the command.
EXPOSE 8080 8081
ENTRYPOINT ["fraudops"]
CMD ["--help"]

# The scanner as a container: `async-discovery` is the entry point (docker-compose.yml
# runs `seed` and `scan` with it). Runtime dependencies only, pinned by constraints.txt.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY async_discovery ./async_discovery
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --no-create-home scanner

USER scanner
WORKDIR /
ENTRYPOINT ["async-discovery"]
CMD ["--help"]

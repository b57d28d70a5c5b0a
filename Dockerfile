# One image for every role: API, scheduler, Ray head and GPU worker (the worker adds CUDA through the host driver).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY service service
COPY web web
COPY scheduler scheduler
COPY jobs jobs
COPY observatory observatory
COPY migrations migrations
RUN pip install -e .
ENV OBSERVATORY_VAR_DIR=/var/lib/observatory
EXPOSE 8000
CMD ["observatory", "serve", "--host", "0.0.0.0"]

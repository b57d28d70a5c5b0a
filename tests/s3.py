"""A real S3-protocol server for the tests: moto's standalone server, started as its own process on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.live import free_port

CREDENTIALS = {"s3_access_key_id": "observatory-test", "s3_secret_access_key": "observatory-test-secret",
               "s3_region": "us-east-1"}


@contextmanager
def s3_server(bucket: str = "observatory-archive") -> Iterator[dict[str, str]]:
    """Start the server, make the bucket, yield the settings that point the archive at it; stop it by PID."""
    import boto3

    port = free_port()
    executable = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the S3 server did not start") from None
                time.sleep(0.2)
        boto3.client("s3", endpoint_url=url, region_name=CREDENTIALS["s3_region"],
                     aws_access_key_id=CREDENTIALS["s3_access_key_id"],
                     aws_secret_access_key=CREDENTIALS["s3_secret_access_key"]).create_bucket(Bucket=bucket)
        yield {"archive_store": "s3", "s3_bucket": bucket, "s3_endpoint_url": url, **CREDENTIALS}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)

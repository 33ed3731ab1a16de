"""A minimal client for the prediction service (stdlib only).

A development helper, not part of the package: used by ``benchmarks/serve.py``
and ``tests/serving/test_service.py`` (which put ``benchmarks/`` on ``sys.path``)::

    from service_client import ServiceClient
    ServiceClient("http://127.0.0.1:8000").predict(open("xray.png", "rb").read())
"""
import http.client
import json
import struct
import time
import urllib.parse
import uuid
import zlib


def multipart_body(data, filename="image.png", field="file", content_type="image/png"):
    """``(body, content_type_header)`` of a multipart/form-data upload of one file."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
            f"filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def decompression_bomb_png(side=20000, rows=64):
    """A valid PNG that declares ``side`` x ``side`` pixels in a few KB (to test refusals)."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (side + 1) * rows, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


class ServiceClient:
    """Requests to one running service; each call opens its own connection.

    Parameters
    ----------
    url : str
        The service's base URL, e.g. ``http://127.0.0.1:8000``.
    timeout : float
        Seconds to wait for a connection or an answer.
    """

    def __init__(self, url, timeout=120.0):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.timeout = timeout

    def request(self, method, path, body=None, headers=None):
        """``(status, headers, body bytes, seconds)`` of one request."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        start = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            payload = response.read()
            return response.status, dict(response.getheaders()), payload, \
                time.perf_counter() - start
        finally:
            connection.close()

    def upload(self, path, data, filename="image.png", field="file", content_type="image/png"):
        """POST one file as multipart/form-data to ``path``."""
        body, header = multipart_body(data, filename, field, content_type)
        return self.request("POST", path, body, {"Content-Type": header})

    def predict(self, data, filename="image.png"):
        """The JSON answer of ``POST /predict``; raises ``RuntimeError`` on a non-200 status."""
        status, _, payload, _ = self.upload("/predict", data, filename)
        answer = json.loads(payload)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer.get('error')}")
        return answer

    def health(self):
        """The JSON answer of ``GET /health``."""
        status, _, payload, _ = self.request("GET", "/health")
        if status != 200:
            raise RuntimeError(f"HTTP {status} from /health")
        return json.loads(payload)

    def wait_until_healthy(self, timeout=180.0, process=None):
        """Poll ``/health`` until it answers (or ``process`` exits, or time runs out)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the service exited with status {process.returncode}")
            try:
                return self.health()
            except (OSError, RuntimeError, http.client.HTTPException):
                time.sleep(0.5)
        raise TimeoutError(f"no answer from http://{self.host}:{self.port}/health in {timeout} s")


def free_port():
    """A TCP port free on localhost right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(model_dir, port=None, extra_args=(), log_path=None, timeout=180.0):
    """Start ``covidspark serve`` in a child process and wait until it is healthy.

    Returns
    -------
    (subprocess.Popen, ServiceClient)
        Stop the process with ``terminate()`` when done.
    """
    import subprocess
    import sys

    port = port or free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "covidspark.cli", "serve", "--model-dir", model_dir,
         "--port", str(port), *extra_args], stdout=log, stderr=subprocess.STDOUT)
    client = ServiceClient(f"http://127.0.0.1:{port}")
    try:
        client.wait_until_healthy(timeout, process)
    except Exception:
        process.kill()
        raise
    return process, client

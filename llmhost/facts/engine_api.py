"""Read-only calls to the Docker Engine API over its Unix socket, with the standard library.

Facts need five GET requests. The docker SDK costs 0.3 s to import (requests, urllib3), a third
of a `plan` or `doctor` run, and much more on slow hosts; builds and deploys still use it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse
from typing import Any

DEFAULT_SOCKET = "/var/run/docker.sock"


class EngineError(Exception):
    """The engine answered with an error status."""


def socket_path() -> str | None:
    """The engine's Unix socket from DOCKER_HOST (default /var/run/docker.sock); None when
    DOCKER_HOST names another transport (tcp, ssh), which only the docker SDK speaks."""
    host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    if not host.startswith("unix://"):
        return None
    return host.removeprefix("unix://") or DEFAULT_SOCKET


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def query(**params: Any) -> str:
    """Query string; dict values (Docker's `filters`) are sent as JSON."""
    encoded = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
    return "?" + urllib.parse.urlencode(encoded) if encoded else ""


def get_json(path: str, sock: str, timeout: float = 5.0) -> Any:
    """GET `path` (with its query) from the engine on `sock`; OSError when unreachable."""
    conn = _UnixConnection(sock, timeout)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = response.read()
    except http.client.HTTPException as exc:
        raise EngineError(f"bad answer from the engine: {exc!r}") from None
    finally:
        conn.close()
    if response.status != 200:
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = body[:200].decode(errors="replace")
        raise EngineError(f"{path.split('?')[0]}: HTTP {response.status} {message}".strip())
    try:
        return json.loads(body)
    except ValueError:
        raise EngineError(f"{path.split('?')[0]}: the engine's answer is not JSON") from None

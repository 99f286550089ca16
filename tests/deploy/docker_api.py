"""A tiny Docker Engine API on loopback: the few endpoints the image tool uses.

No Docker engine runs on these machines, so the build tool is tested up to the engine
boundary: the real Docker SDK talks real HTTP to this server, which records what it was
sent (build context, query strings, auth headers) and answers as the Engine API v1.41 does
(newline-delimited JSON progress streams, `aux` messages carrying the image id and the
pushed digest).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROUTE = re.compile(r"^/v[\d.]+(?P<path>/.*)$")
IMAGE_ROUTE = re.compile(r"^/images/(?P<name>.+)/(?P<action>tag|push)$")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeDockerEngine:
    """Behaviour switches for a test: fail the build, refuse the login, ..."""

    build_error: str | None = None
    login_status: int = 200
    requests: list[Recorded] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)  # image id -> context
    tags: dict[str, str] = field(default_factory=dict)  # repo:tag -> image id

    def find(self, path_suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(path_suffix)]


def _handler(engine: FakeDockerEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _reply(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _stream(self, messages: list[dict[str, Any]]) -> None:
            """A progress stream, chunked as the engine sends it (one message per chunk)."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for message in messages:
                data = json.dumps(message).encode() + b"\r\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            match = ROUTE.match(parts.path)
            path = match.group("path") if match else parts.path
            body = self._body()
            record = Recorded(method, path, parse_qs(parts.query), dict(self.headers), body)
            engine.requests.append(record)
            if path == "/_ping":
                self._reply(200, b"OK", "text/plain")
            elif path == "/version":
                self._reply(200, json.dumps({"ApiVersion": "1.41", "Version": "20.10"}).encode())
            elif path == "/auth":
                if engine.login_status == 200:
                    self._reply(200, json.dumps({"Status": "Login Succeeded"}).encode())
                else:
                    self._reply(engine.login_status, json.dumps({"message": "unauthorized"}).encode())
            elif path == "/build":
                self._build(record)
            elif found := IMAGE_ROUTE.match(path):
                self._image(found.group("name"), found.group("action"), record)
            else:
                self._reply(404, json.dumps({"message": f"no route {path}"}).encode())

        def _build(self, record: Recorded) -> None:
            if engine.build_error:
                self._stream([
                    {"stream": "Step 1/9 : ARG PYTHON_IMAGE\n"},
                    {"errorDetail": {"message": engine.build_error}, "error": engine.build_error},
                ])
                return
            image_id = "sha256:" + hashlib.sha256(record.body).hexdigest()
            engine.images[image_id] = record.body
            for tag in record.query.get("t", []):
                engine.tags[tag] = image_id
            self._stream([
                {"stream": "Step 1/9 : ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm\n"},
                {"stream": " ---> Running in 0123456789ab\n"},
                {"aux": {"ID": image_id}},
                {"stream": f"Successfully built {image_id[7:19]}\n"},
            ])

        def _image(self, name: str, action: str, record: Recorded) -> None:
            tag = record.query.get("tag", ["latest"])[0]
            known = name in engine.images or name in engine.tags or f"{name}:{tag}" in engine.tags
            if not known:
                self._reply(404, json.dumps({"message": f"No such image: {name}"}).encode())
                return
            if action == "tag":
                repo = record.query["repo"][0]
                tag = record.query.get("tag", ["latest"])[0]
                engine.tags[f"{repo}:{tag}"] = engine.tags.get(name, name)
                self._reply(201, b"")
                return
            header = record.headers.get("X-Registry-Auth", "")
            auth = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)) or b"{}")
            if not auth.get("password"):
                self._stream([{"errorDetail": {"message": "no basic auth credentials"},
                               "error": "no basic auth credentials"}])
                return
            image_id = engine.tags[f"{name}:{tag}"]
            digest = "sha256:" + hashlib.sha256(image_id.encode()).hexdigest()
            self._stream([
                {"status": f"The push refers to repository [{name}]"},
                {"status": "Pushed", "progressDetail": {}, "id": "0123456789ab"},
                {"status": f"{tag}: digest: {digest} size: 1234"},
                {"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": 1234}},
            ])

    return Handler


class DockerApiServer:
    """`with DockerApiServer() as server: docker.DockerClient(base_url=server.url)`."""

    def __init__(self, engine: FakeDockerEngine | None = None) -> None:
        self.engine = engine or FakeDockerEngine()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.engine))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"tcp://{host}:{port}"

    def __enter__(self) -> DockerApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

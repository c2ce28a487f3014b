"""A small HTTP/1.1 file server on loopback for `bfctl demo`: what a real origin gives a client.

GET and HEAD with Content-Length, a strong ETag, one byte range (`bytes=N-` or `bytes=N-M`,
honouring If-Range), and keep-alive, so the daemon's resume path runs as it would in the field.
"""

import re
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class FileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real origin would
    root: Path

    def do_HEAD(self) -> None:
        self.respond(send_body=False)

    def do_GET(self) -> None:
        self.respond(send_body=True)

    def respond(self, send_body: bool) -> None:
        path = self.local_path()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        size = path.stat().st_size
        etag = strong_etag(path)
        wanted = self.wanted_range(etag)
        if wanted is None:
            start, length = 0, size
            self.send_response(HTTPStatus.OK)
        elif wanted[0] >= size:
            self.refuse_range(size)
            return
        else:
            start, end = wanted[0], min(wanted[1], size - 1)
            length = end - start + 1
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if send_body and length:
            with path.open("rb") as body:
                self.connection.sendfile(body, start, length)

    def refuse_range(self, size: int) -> None:
        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
        self.send_header("Content-Range", f"bytes */{size}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def local_path(self) -> Path | None:
        relative = unquote(urlsplit(self.path).path).lstrip("/")
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def wanted_range(self, etag: str) -> tuple[int, int] | None:
        """(first, last) byte asked for, or None for the whole file.

        A stale If-Range means the client's partial copy is of another version: send it all.
        """
        match = RANGE.match(self.headers.get("Range", ""))
        if match is None or self.headers.get("If-Range", etag) != etag:
            return None
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else 2**63
        return (start, end) if end >= start else None

    def log_message(self, format: str, *args) -> None:
        pass  # the demo's own output is what the operator wants to read


def strong_etag(path: Path) -> str:
    # Changes whenever the file does, as nginx's does; not an MD5, so nobody mistakes it for one.
    info = path.stat()
    return f'"{info.st_mtime_ns:x}-{info.st_size:x}-{info.st_ino:x}"'


class OriginServer(ThreadingHTTPServer):
    daemon_threads = True
    # The daemon opens many connections at once; the default backlog of 5 drops SYNs.
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:
        # A client closing its connection (a stopping daemon, a cancelled transfer) is normal
        # for an origin; anything else is a bug in this server and keeps its traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Origin:
    """Serves `root` on 127.0.0.1 at a free port, in a background thread."""

    def __init__(self, root: Path):
        handler = type("Handler", (FileHandler,), {"root": root.resolve()})
        self.server = OriginServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "Origin":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

"""The dashboard's files (``edgeloop/web/static/``, in the wheel), served from memory.

Read once at start: a few hundred KiB, and no path from a request ever reaches the
file system, so there is nothing to traverse. The Content-Security-Policy lets the
page load and connect to this appliance only: nothing comes from the internet.
"""

from __future__ import annotations

import http
from importlib.resources import files

from websockets.datastructures import Headers
from websockets.http11 import Response

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}
# 'unsafe-inline' for styles only: uPlot sizes its elements through style attributes.
POLICY = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
)
INDEX = "index.html"


def load() -> dict[str, tuple[bytes, str]]:
    """Each file of the static folder by name: its bytes and content type."""
    found = {}
    for entry in files("edgeloop.web").joinpath("static").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in CONTENT_TYPES:
            found[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    return found


class StaticFiles:
    def __init__(self) -> None:
        self.files = load()

    def response(self, name: str) -> Response | None:
        """The file ``name``, or None if there is no such file."""
        found = self.files.get(name)
        if found is None:
            return None
        data, content_type = found
        headers = Headers(
            [("Content-Type", content_type), ("Content-Length", str(len(data))),
             ("Cache-Control", "no-cache"), ("Content-Security-Policy", POLICY),
             ("X-Content-Type-Options", "nosniff")]
        )  # fmt: skip
        return Response(200, http.HTTPStatus.OK.phrase, headers, data)

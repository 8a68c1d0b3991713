"""The dashboard's files: `GET /` is the page, `GET /static/<path>` its scripts, styles and the vendored
chart library, all read from the package (so the page works offline, with no request to another host).

Only files found under `static/` when the module loads are served, by exact name: a request path is a key
of that table, never joined to a directory, so no path can escape it.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# The page loads nothing but its own files and talks only to its own origin; no frame may hold it (its
# buttons act, so a page that framed it could trick a click).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _load() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        content_type = _TYPES.get(path.suffix)
        if path.is_file() and content_type is not None:
            files[path.relative_to(STATIC_DIR).as_posix()] = (path.read_bytes(), content_type)
    return files


# Read once: the files are part of the installed package and small (the chart library is 51 KB).
FILES = _load()


def static_response(name: str) -> web.Response:
    """`name` relative to static/ ("index.html" for the page); 404 for anything not in the table."""
    found = FILES.get(name)
    if found is None:
        return web.Response(status=404, text="not found\n")
    body, content_type = found
    charset = None if content_type.startswith("image/png") else "utf-8"
    return web.Response(
        body=body,
        content_type=content_type,
        charset=charset,
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )

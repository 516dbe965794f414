"""GET /dashboard: the page a person watches spend on (SPEC section 10), served from this package's static files.

The page is plain HTML, CSS and JavaScript with SVG bars (`static/`), shipped in the wheel and read with
`importlib.resources`: no CDN, it works offline. It reads and writes through /api/v1 with the person's token
and follows `GET /api/v1/events`, re-fetching every second while the stream is down. Two facts the page cannot
learn without a failed request (which the browser logs as an error) are written into it as it is served:
whether the API needs a token, and where the events stream is.
"""

from importlib.resources import files
from typing import Any

from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import Response

EVENTS_PATH = "/api/v1/events"
_STATIC = files(__package__) / "static"
_MEDIA = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Everything the page loads comes from this server: a CDN or an inline script would be refused.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def register_dashboard(server: MCPServer[Any], *, require_token: bool) -> None:
    """Serve the page at /dashboard and its files at /dashboard/<name> on `server`'s HTTP app."""
    page = (_STATIC / "index.html").read_text(encoding="utf-8")
    assets = {name: (_STATIC / name).read_bytes() for name in _MEDIA}

    @server.custom_route("/dashboard", methods=["GET"])  # type: ignore[untyped-decorator]
    async def dashboard(request: Request) -> Response:
        html = page.replace("{{token}}", "required" if require_token else "none")
        html = html.replace("{{events}}", EVENTS_PATH)  # the HTTP transport always streams events
        return Response(html, media_type="text/html; charset=utf-8", headers=_HEADERS)

    @server.custom_route("/dashboard/{name}", methods=["GET"])  # type: ignore[untyped-decorator]
    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return Response(f"no file {name[:60]!r} here", status_code=404, media_type="text/plain")
        return Response(assets[name], media_type=_MEDIA[name], headers=_HEADERS)

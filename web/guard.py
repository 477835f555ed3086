"""Who may use a server: the rules both servers (workspace and bundle) apply.

On a loopback address anyone logged in to the machine may, as they may read its files;
but a web page opened elsewhere must not reach in: requests must be addressed to this
machine's own names (a site whose name is made to point at 127.0.0.1, DNS rebinding,
is refused). On any other address every request needs the access token, as a bearer
header (``Authorization: Bearer``, scripts) or as the cookie the login page sets
(browsers; HttpOnly, SameSite=Strict).

Posts, everywhere: JSON or raw bytes (which another site's page cannot send without this
server's consent), or a form (the dashboard's, and multipart uploads) whose Origin, when
the browser names one, is this server itself. The dashboard's forms also carry a CSRF
token (web.pages).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
POST_TYPES = ("application/json", "application/octet-stream", "")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
TOKEN_COOKIE = "medanomaly_token"
OPEN_PATHS = ("/login", "/static/")  # answered without the token (the login page and its style)


def host_name(header: str) -> str:
    """The name in a Host header, without its port ("[::1]:8765" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def guard(app: FastAPI, *, require_token: bool, token_matches: Callable[[str], bool],
          how_to_get_one: str) -> Callable[[Request], None]:
    """Install the address and post rules on ``app``; return the dependency that checks the
    token (when one is required)."""

    @app.middleware("http")
    async def same_machine_and_site(request: Request, call_next: Any) -> Any:
        host = request.headers.get("host", "")
        if not require_token and host_name(host) not in LOOPBACK_NAMES:
            return JSONResponse({"detail": "This server answers requests addressed to 127.0.0.1 or "
                                           "localhost only."}, status_code=400)
        if request.method == "POST":
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            origin = request.headers.get("origin")
            if kind in FORM_TYPES:
                if origin is not None and origin_host(origin) != host.strip().lower():
                    return JSONResponse({"detail": "Refused: a form sent from another site."}, status_code=403)
            elif kind not in POST_TYPES:
                return JSONResponse({"detail": "Send JSON, a form, or a file as application/octet-stream."},
                                    status_code=415)
        return await call_next(request)

    def authorized(request: Request) -> None:
        if not require_token or request.url.path.startswith(OPEN_PATHS):
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given.strip() and token_matches(given.strip()):
            return
        cookie = request.cookies.get(TOKEN_COOKIE, "")
        if cookie and token_matches(cookie):
            return
        raise HTTPException(401, f"This server needs its access token: send 'Authorization: Bearer TOKEN', or "
                                 f"sign in at /login ({how_to_get_one}).", headers={"WWW-Authenticate": "Bearer"})

    return authorized


def origin_host(origin: str) -> str:
    """The host (and port) an Origin header names ("http://127.0.0.1:8765" -> "127.0.0.1:8765")."""
    from urllib.parse import urlsplit

    try:
        return (urlsplit(origin.strip()).netloc or "").lower()
    except ValueError:
        return ""

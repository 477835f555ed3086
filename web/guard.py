"""Who may use a server: the rules both servers (workspace and bundle) apply.

On a loopback address anyone logged in to the machine may, as they may read its files;
but a web page opened elsewhere must not reach in: requests must be addressed to this
machine's own names (a site whose name is made to point at 127.0.0.1, DNS rebinding,
is refused) and posts must be JSON or raw bytes, which no other site's form can send.
On any other address every request needs the access token (``Authorization: Bearer``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
POST_TYPES = ("application/json", "application/octet-stream", "")


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
    """Install the loopback rules on ``app`` (when no token is required); the dependency that
    checks the bearer token (when one is)."""
    if not require_token:

        @app.middleware("http")
        async def loopback_only(request: Request, call_next: Any) -> Any:
            if host_name(request.headers.get("host", "")) not in LOOPBACK_NAMES:
                return JSONResponse({"detail": "This server answers requests addressed to 127.0.0.1 or "
                                               "localhost only."}, status_code=400)
            if request.method == "POST" and request.headers.get("content-type", "").split(";")[0].strip() \
                    not in POST_TYPES:
                return JSONResponse({"detail": "Send JSON, or a file as application/octet-stream."}, status_code=415)
            return await call_next(request)

    def authorized(request: Request) -> None:
        if not require_token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip() or not token_matches(given.strip()):
            raise HTTPException(401, f"This server needs its access token: send 'Authorization: Bearer TOKEN' "
                                     f"({how_to_get_one}).", headers={"WWW-Authenticate": "Bearer"})

    return authorized

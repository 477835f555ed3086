"""The workspace's access token for a server bound beyond this machine: made on request, shown
once, kept only as its SHA-256 (``data/server_token.sha256``, mode 0600)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from app.workspace import Workspace

TOKEN_FILE = "server_token.sha256"


def _token_path(ws: Workspace) -> Path:
    return ws.data_dir / TOKEN_FILE


def new_token(ws: Workspace) -> str:
    """A fresh access token for this workspace (replacing any other); only its hash is kept."""
    token = secrets.token_urlsafe(32)
    path = _token_path(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(hashlib.sha256(token.encode()).hexdigest() + "\n")
    path.chmod(0o600)
    return token


def has_token(ws: Workspace) -> bool:
    return _token_path(ws).exists()


def token_matches(ws: Workspace, given: str) -> bool:
    try:
        kept = _token_path(ws).read_text().strip()
    except OSError:
        return False
    return hmac.compare_digest(kept, hashlib.sha256(given.encode()).hexdigest())

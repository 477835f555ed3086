"""Pseudonyms for patient identifiers: a keyed hash with the workspace's secret.

The same patient gets the same pseudonym within a workspace (so splits stay
patient-level across rescans); without the secret nobody can go back to the ID.
"""

from __future__ import annotations

import hashlib
import hmac


def pseudonymize(secret: bytes, identifier: str, prefix: str = "P") -> str:
    digest = hmac.new(secret, identifier.encode("utf-8", "surrogateescape"), hashlib.sha256)
    return f"{prefix}{digest.hexdigest()[:12]}"

"""Signed bundles: an Ed25519 signature over the model card (``cryptography``).

The card holds the SHA-256 of every model file, so a card whose signature verifies
vouches for the models too. Each workspace has one signing key, made on first export
(``data/private/signing_key.pem``, mode 0600); its public key is written beside it
(``data/signing_key.pub.pem``) and into every bundle, so that a hospital can check a
bundle with plain Python and that public key (docs/user_guide.md, Export bundles).

A bundle is trusted when its signature verifies with the workspace's own key or
with a key placed in ``data/trusted_keys/`` (public keys of colleagues' workstations).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from app.atomic import create_once, temp_sibling
from core.errors import ExportError

SIGNATURE = "signature.json"
PUBLIC_KEY = "signing_key.pub.pem"
ALGORITHM = "Ed25519"


def _private_path(data_dir: Path) -> Path:
    return data_dir / "private" / "signing_key.pem"


def public_key_path(data_dir: Path) -> Path:
    return data_dir / PUBLIC_KEY


def trusted_keys_dir(data_dir: Path) -> Path:
    return data_dir / "trusted_keys"


def _signing_key(data_dir: Path) -> Any:
    """The workspace's private key, made once (of several processes making it, one wins)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = _private_path(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        create_once(path, Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ExportError(f"The signing key {path} is damaged. Restore it from a backup, or move it aside to "
                          "make a new one (bundles signed with the old key then need its public key in "
                          "data/trusted_keys/).") from err


def _raw(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(data_dir: Path) -> bytes:
    """The workspace's public key as PEM, also written to data/signing_key.pub.pem."""
    from cryptography.hazmat.primitives import serialization

    pem = _signing_key(data_dir).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = public_key_path(data_dir)
    if not path.exists() or path.read_bytes() != pem:
        tmp = temp_sibling(path)
        tmp.write_bytes(pem)
        os.replace(tmp, path)
    return pem


def sign_bundle(data_dir: Path, bundle: Path, card_name: str) -> dict[str, Any]:
    """Sign ``bundle/card_name`` as it is on disk; writes signature.json and the public key."""
    key = _signing_key(data_dir)
    pem = public_pem(data_dir)
    raw = _raw(key.public_key())
    document = {
        "algorithm": ALGORITHM, "signed_file": card_name, "key_id": key_id(raw),
        "public_key": base64.b64encode(raw).decode("ascii"),
        "signature": base64.b64encode(key.sign((bundle / card_name).read_bytes())).decode("ascii"),
    }
    (bundle / SIGNATURE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    (bundle / PUBLIC_KEY).write_bytes(pem)
    return document


def trusted_raw_keys(data_dir: Path | None) -> dict[str, bytes]:
    """key id -> raw public key, for the workspace's key and every PEM in data/trusted_keys/."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if data_dir is None:
        return {}
    found: dict[str, bytes] = {}
    candidates = [public_key_path(data_dir)] if _private_path(data_dir).exists() else []
    folder = trusted_keys_dir(data_dir)
    candidates += sorted(folder.glob("*.pem")) if folder.is_dir() else []
    for path in candidates:
        if path == public_key_path(data_dir):
            raw = _raw(_signing_key(data_dir).public_key())  # the private key is the truth, not its copy
        else:
            try:
                key = load_pem_public_key(path.read_bytes())
            except (ValueError, OSError):
                continue
            if not isinstance(key, Ed25519PublicKey):
                continue
            raw = _raw(key)
        found[key_id(raw)] = raw
    return found


def check_signature(bundle: Path, card_name: str, trusted: dict[str, bytes], trust_unsigned: bool) -> str:
    """How the bundle's card is vouched for: 'signed by <key id>' or 'unsigned (trusted by request)'.

    Raises:
        ExportError: unsigned, a signature that does not verify, or a key not trusted here,
            unless ``trust_unsigned``.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    override = " To use it anyway, knowing where it came from, add --trust-unsigned."
    path = bundle / SIGNATURE
    if not path.exists():
        if trust_unsigned:
            return "unsigned (trusted by request)"
        raise ExportError(f"{bundle} is not signed (no {SIGNATURE}): nothing vouches that its model is the one "
                          f"exported. Export the run again with this version of the app.{override}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        raw = base64.b64decode(document["public_key"], validate=True)
        signature = base64.b64decode(document["signature"], validate=True)
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, (bundle / card_name).read_bytes())
    except (ValueError, KeyError, TypeError, InvalidSignature) as err:
        if trust_unsigned:
            return "signature does not verify (trusted by request)"
        raise ExportError(f"The signature of {bundle} does not verify ({type(err).__name__}): its model card was "
                          f"changed after export, or the signature is damaged. Do not use it; export the run "
                          f"again.{override}") from None
    kid = key_id(raw)
    if kid in trusted:
        return f"signed by {kid}"
    if trust_unsigned:
        return f"signed by {kid}, a key not trusted here (trusted by request)"
    raise ExportError(f"{bundle} is signed by key {kid}, which this workspace does not trust. If it comes from a "
                      f"colleague's workstation, put their {PUBLIC_KEY} in data/trusted_keys/ (check its key id "
                      f"with them).{override}")


def has_signing_key(data_dir: Path) -> bool:
    return _private_path(data_dir).exists()


def sign_bytes(data_dir: Path, data: bytes) -> dict[str, Any]:
    """An Ed25519 signature of ``data`` by the workspace's key (made on first use)."""
    key = _signing_key(data_dir)
    raw = _raw(key.public_key())
    return {"algorithm": ALGORITHM, "key_id": key_id(raw), "public_key": base64.b64encode(raw).decode("ascii"),
            "signature": base64.b64encode(key.sign(data)).decode("ascii")}


def verify_bytes(raw_key: bytes, data: bytes, signature_b64: str) -> bool:
    """Whether ``signature_b64`` is the signature of ``data`` by the raw Ed25519 key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True

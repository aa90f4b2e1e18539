"""Encryption at rest for provider credentials (Fernet, key derived from settings)."""

import base64
import hashlib

from cryptography.fernet import Fernet
from django.conf import settings


def _fernet() -> Fernet:
    digest = hashlib.sha256(settings.OPENTRACY_ENCRYPTION_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


_SECRET_WORDS = ("secret", "token", "password")


def is_secret_option(name: str) -> bool:
    """Credential options that are secrets (Bedrock's session_token, ...): encrypted at rest too."""
    return any(word in name.lower() for word in _SECRET_WORDS)


def seal_options(options: dict[str, str], stored: dict[str, str]) -> dict[str, str]:
    """Options as stored: secret values encrypted (a value kept unchanged from `stored` already is)."""
    return {k: v if not is_secret_option(k) or stored.get(k) == v else encrypt(v) for k, v in options.items()}


def open_options(options: dict[str, str]) -> dict[str, str]:
    return {str(k): decrypt(v) if is_secret_option(k) else str(v) for k, v in options.items()}

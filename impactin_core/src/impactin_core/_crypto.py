"""Encryption at rest for tokens and outbox records (Fernet, AES-128-CBC + HMAC)."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ._errors import ConfigError, StoreError

__all__ = ["Sealer", "generate_key"]


def generate_key() -> str:
    """Return a new random store key."""
    return Fernet.generate_key().decode("ascii")


class Sealer:
    """Encrypt with the first key, decrypt with any, so keys can rotate.

    The store key setting holds one or more keys separated by commas, the
    newest first. ``rotate`` re-encrypts a value under the newest key.
    """

    def __init__(self, keys: Sequence[str], *, key_name: str) -> None:
        if not keys:
            from ._config import env_label

            message = (
                f"The store key is missing: {env_label(key_name, 'store.key_env')} "
                "is not set; set it to the output of 'impactin keygen' (keep it "
                "secret, and keep old keys after a comma while rotating)."
            )
            raise ConfigError(message, key=key_name)
        try:
            self._fernet = MultiFernet([Fernet(key.strip()) for key in keys])
        except ValueError as exc:
            message = (
                f"The store key {key_name} is not a valid Fernet key; generate one "
                "with 'impactin keygen'."
            )
            raise ConfigError(message, key=key_name) from exc

    @classmethod
    def from_setting(cls, value: str | None, *, key_name: str) -> Sealer:
        keys = [key for key in (value or "").split(",") if key.strip()]
        return cls(keys, key_name=key_name)

    def seal(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def open(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            message = (
                "A stored value cannot be decrypted with the configured store "
                "keys; add the key it was written with to the key list."
            )
            raise StoreError(message) from exc

    def rotate(self, token: bytes) -> bytes:
        return self._fernet.rotate(token)

"""Keys for secrets at rest: the :class:`Keyring`, and AES-256-GCM sealing of one value.

A stored secret is a JSON object that says how it was made, so a reader needs nothing else
but the key it names::

    {"$secret": 1, "alg": "AES-256-GCM", "kid": "k2", "nonce": "<base64>", "ct": "<base64>"}

``$secret`` is the format's version, ``kid`` the key id, ``nonce`` 96 fresh random bits per
value and ``ct`` the ciphertext with its 16-byte tag. The associated data binds the
collection, the entity id, the value's path in the document and the key id, so a ciphertext
copied into another entity or field, or relabelled with another key id, does not decrypt.
``cryptography`` is imported when the first :class:`Keyring` is built, not with the package.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ._errors import KeyringError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["ALGORITHM", "ENV", "FORMAT", "Keyring", "Unsealable", "is_sealed"]

ENV = "SYMPHONY_NB_KEYS"
"""The environment variable :meth:`Keyring.from_env` reads."""
FORMAT = 1
"""The version of the stored form, its ``$secret`` member."""
ALGORITHM = "AES-256-GCM"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_AD_PREFIX = b"symphony_nb secret\x00"
_MEMBERS = frozenset(("$secret", "alg", "kid", "nonce", "ct"))


class Unsealable(Exception):
    """A stored value that does not open; ``key_id`` as far as it is known (internal)."""

    def __init__(self, reason: str, key_id: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id


def is_sealed(value: Any) -> bool:
    """Whether ``value`` (a parsed JSON value) has the form of a stored secret."""
    return type(value) is dict and "$secret" in value


def _decode_key(key_id: str, key: object) -> bytes:
    if isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
    elif isinstance(key, str):
        text = key.strip()
        try:
            raw = base64.b64decode(
                text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4),
                validate=True,
            )
        except (binascii.Error, ValueError):
            raise KeyringError(
                f"key {key_id!r} is not base64 text; use Keyring.generate() for a new key"
            ) from None
    else:
        raise KeyringError(
            f"key {key_id!r} must be 32 bytes or their base64 text, got {type(key).__name__}"
        )
    if len(raw) != KEY_BYTES:
        raise KeyringError(
            f"key {key_id!r} is {len(raw)} bytes; AES-256 needs {KEY_BYTES} "
            "(use Keyring.generate() for a new key)"
        )
    return raw


def _check_key_id(key_id: object) -> str:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise KeyringError(f"key ids are 1-64 letters, digits, '_', '.' or '-', got {key_id!r}")
    return key_id


class Keyring:
    """The keys that encrypt secret fields at rest; one of them, the primary, encrypts.

    ``Keyring({"k2": key2, "k1": key1}, primary="k2")``: each key is 32 bytes or their
    base64 text (as :meth:`generate` makes); without ``primary`` the first key is primary.
    Every key decrypts what it encrypted, so rotation is: add a new key, make it primary,
    run :meth:`Repository.rotate_keys`, then drop the old one. A key of the wrong length, a
    bad key id or a primary that is not in the keyring raises :class:`KeyringError`.

    Key material never appears in ``repr``, errors or logs.
    """

    __slots__ = ("_ciphers", "_keys", "primary")

    def __init__(self, keys: Mapping[str, bytes | str], *, primary: str | None = None) -> None:
        if not isinstance(keys, Mapping) or not keys:
            raise KeyringError("a Keyring needs at least one key: Keyring({'k1': key})")
        self._keys = {_check_key_id(kid): _decode_key(kid, key) for kid, key in keys.items()}
        if primary is None:
            primary = next(iter(self._keys))
        if primary not in self._keys:
            raise KeyringError(
                f"primary key {primary!r} is not in the keyring; its keys: {sorted(self._keys)}"
            )
        self.primary: str = primary
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._ciphers: dict[str, AESGCM] = {kid: AESGCM(key) for kid, key in self._keys.items()}

    @staticmethod
    def generate() -> str:
        """A new random 256-bit key, as base64 text (for a Keyring or ``SYMPHONY_NB_KEYS``)."""
        return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring | None:
        """The keyring in ``$SYMPHONY_NB_KEYS``, or None when it is unset or blank.

        The format is ``id:key`` pairs separated by commas, the primary first:
        ``SYMPHONY_NB_KEYS="k2:<base64 key>,k1:<base64 key>"``. A malformed value raises
        :class:`KeyringError` (naming the position, never the key).
        """
        text = (os.environ if environ is None else environ).get(ENV, "").strip()
        if not text:
            return None
        keys: dict[str, str] = {}
        for position, item in enumerate(text.split(","), 1):
            kid, colon, key = item.strip().partition(":")
            if not colon or not kid or not key:
                raise KeyringError(
                    f"${ENV} entry {position} is not 'id:key'; the format is "
                    f"{ENV}='k2:<base64 key>,k1:<base64 key>' (primary first)"
                )
            if kid in keys:
                raise KeyringError(f"${ENV} names key {kid!r} twice")
            keys[kid] = key
        return cls(keys)

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys held, primary first."""
        return [self.primary, *(kid for kid in self._keys if kid != self.primary)]

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __repr__(self) -> str:
        return f"Keyring({self.key_ids}, primary={self.primary!r})"

    def __reduce__(self) -> Any:
        raise TypeError("a Keyring is not pickled: its keys would be written out in plaintext")

    # ------------------------------------------------------------------ sealing

    def seal(self, plaintext: str, context: bytes) -> dict[str, Any]:
        """``plaintext`` encrypted under the primary key, bound to ``context`` (see module)."""
        kid = self.primary
        nonce = os.urandom(NONCE_BYTES)
        ad = _AD_PREFIX + context + b"\x00" + kid.encode()
        ct = self._ciphers[kid].encrypt(nonce, plaintext.encode(), ad)
        return {
            "$secret": FORMAT,
            "alg": ALGORITHM,
            "kid": kid,
            "nonce": binascii.b2a_base64(nonce, newline=False).decode(),
            "ct": binascii.b2a_base64(ct, newline=False).decode(),
        }

    def open(self, sealed: Mapping[str, Any], context: bytes) -> str:
        """The plaintext of a stored secret; raise :class:`Unsealable` if it does not open."""
        kid = sealed.get("kid")
        cipher = self._ciphers.get(kid) if type(kid) is str else None
        if (
            cipher is None
            or len(sealed) != 5
            or sealed.get("$secret") != FORMAT
            or sealed.get("alg") != ALGORITHM
        ):
            raise self._malformed(sealed)
        try:
            nonce = binascii.a2b_base64(sealed["nonce"], strict_mode=True)
            ct = binascii.a2b_base64(sealed["ct"], strict_mode=True)
        except (binascii.Error, ValueError, TypeError, KeyError):
            raise Unsealable("its nonce or ciphertext is not base64", kid) from None
        if len(nonce) != NONCE_BYTES:
            raise Unsealable("its nonce is not 96 bits", kid)
        try:
            plain = cipher.decrypt(nonce, ct, _AD_PREFIX + context + b"\x00" + str(kid).encode())
        except Exception as exc:  # cryptography's InvalidTag, imported only with it
            if type(exc).__name__ != "InvalidTag":
                raise
            raise Unsealable(
                "authentication failed: a wrong key, or a ciphertext tampered with or moved "
                "from another entity or field",
                kid,
            ) from None
        try:
            return plain.decode()
        except UnicodeDecodeError:  # only a writer holding the key could make this
            raise Unsealable("the plaintext is not UTF-8 text", kid) from None

    def _malformed(self, sealed: Mapping[str, Any]) -> Unsealable:
        """Why a stored form cannot even be tried, naming its key id if it has a valid one."""
        kid = sealed.get("kid")
        shown = kid if isinstance(kid, str) and _KEY_ID.fullmatch(kid) else None
        if sealed.get("$secret") != FORMAT or set(sealed) != _MEMBERS:
            return Unsealable(
                f"the stored form is not version {FORMAT} of symphony_nb's secrets", shown
            )
        if sealed.get("alg") != ALGORITHM:
            return Unsealable(f"unknown algorithm {str(sealed.get('alg'))[:40]!r}", shown)
        if shown is None:
            return Unsealable("the stored form names no valid key id", None)
        return Unsealable(
            f"the keyring has no key {shown!r} (its keys: {self.key_ids}); "
            "add the key that encrypted it",
            shown,
        )


def context_of(collection: str, entity_id: str, path: tuple[str | int, ...]) -> bytes:
    """The associated data (without the key id) of the value at ``path`` of an entity."""
    return orjson.dumps([collection, entity_id, list(path)])

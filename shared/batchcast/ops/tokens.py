"""Bearer tokens: who a request comes from and what it may see or upload.

One token map serves the results API and the ingest endpoint. It holds only SHA-256 digests of the
tokens, never the tokens, and comes from ``BATCHCAST_API_TOKENS`` (Cloud Run injects it from Secret
Manager) or, when that is unset, from the bucket object ``config/api_tokens.json``::

    {"tokens": [
      {"sha256": "<hex>", "name": "anna", "role": "manager", "entities": {"retail": ["berlin-001"]}},
      {"sha256": "<hex>", "name": "ops", "role": "operator"},
      {"sha256": "<hex>", "name": "store-feed", "role": "uploader", "datasets": ["retail"]}
    ]}

Managers see the entities listed for them, operators see and upload everything, uploaders may
upload to their datasets only.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from batchcast.core import layout
from batchcast.core.obs import run_logger
from batchcast.ports import BlobStore, NotFound

Role = Literal["manager", "operator", "uploader"]
TTL_SECONDS = 30.0  # a revoked token stops working within this long; the map is read at most this often


class TokenMapError(ValueError):
    """The token map cannot be read or is invalid: nobody can be authenticated."""


class Principal(BaseModel):
    """One token's holder: a name, a role and what the role is limited to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    name: str = Field(min_length=1)
    role: Role
    entities: dict[str, list[str]] = Field(default_factory=dict)  # managers: dataset -> entity ids
    datasets: list[str] = Field(default_factory=list)  # uploaders: the datasets they may upload to

    @field_validator("sha256")
    @classmethod
    def _lower(cls, digest: str) -> str:
        return digest.lower()

    def can_read(self, dataset: str, entity_id: str) -> bool:
        """True when this holder may see ``entity_id`` of ``dataset``."""
        return self.role == "operator" or (
            self.role == "manager" and entity_id in self.entities.get(dataset, ())
        )

    def readable(self, dataset: str) -> set[str] | None:
        """The entity ids of ``dataset`` this holder may see; None means all of them."""
        if self.role == "operator":
            return None
        return set(self.entities.get(dataset, ())) if self.role == "manager" else set()

    def can_upload(self, dataset: str) -> bool:
        """True when this holder may upload files for ``dataset``."""
        return self.role == "operator" or (self.role == "uploader" and dataset in self.datasets)


class TokenMap(BaseModel):
    """The whole map, validated; looked up by digest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[Principal] = Field(default_factory=list)
    _by_digest: dict[str, Principal] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _index(self) -> TokenMap:
        for principal in self.tokens:
            if principal.sha256 in self._by_digest:
                raise ValueError(f"two entries share the digest of {principal.name!r}")
            self._by_digest[principal.sha256] = principal
        return self

    def find(self, token: str) -> Principal | None:
        """The holder of ``token``, or None.

        Looking the digest up (rather than comparing tokens) leaks nothing through timing: an
        attacker controls the token, not its SHA-256.
        """
        return self._by_digest.get(hash_token(token))


def hash_token(token: str) -> str:
    """The SHA-256 hex digest the map stores for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random token and its digest (give the token out; put only the digest in the map)."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def grant(blobs: BlobStore, name: str, role: Role, entities: dict[str, list[str]] | None = None) -> str:
    """Give ``name`` a new token in the bucket's map (``config/api_tokens.json``), replacing the
    holder's old one; return the token (the map keeps only its digest)."""
    try:
        current = parse_token_map(blobs.read(layout.API_TOKENS), layout.API_TOKENS)
    except NotFound:
        current = TokenMap()
    token, digest = new_token()
    holder = Principal(sha256=digest, name=name, role=role, entities=entities or {})
    kept = [p for p in current.tokens if p.name != name]
    updated = TokenMap(tokens=[*kept, holder])
    blobs.write(layout.API_TOKENS, json.dumps(updated.model_dump(mode="json"), indent=2).encode())
    return token


def parse_token_map(text: str | bytes, source: str = "token map") -> TokenMap:
    """Parse and validate a token map; raise :class:`TokenMapError` naming the source."""
    try:
        return TokenMap.model_validate(json.loads(text))
    except (ValueError, ValidationError) as error:
        raise TokenMapError(f"{source} is not a valid token map: {error}") from error


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class TokenStore:
    """Authenticates bearer tokens against the map, re-read at most every ``ttl`` seconds.

    ``inline`` is the map's JSON from ``BATCHCAST_API_TOKENS``; when empty, the map is the bucket
    object ``config/api_tokens.json`` (absent: no tokens, everyone is refused). If a re-read fails,
    the last good map stays in force so a bad edit cannot lock everyone out mid-day.
    """

    def __init__(
        self,
        blobs: BlobStore | None,
        inline: str = "",
        *,
        ttl: float = TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._blobs = blobs
        self._inline = inline.strip()
        self._ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._map: TokenMap | None = None
        self._loaded_at = float("-inf")

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The holder of the request's bearer token, or None (missing, malformed or unknown)."""
        token = bearer(authorization)
        return None if token is None else self.find(token)

    def find(self, token: str) -> Principal | None:
        """The holder of ``token`` in the map in force, or None."""
        return self.current().find(token)

    def current(self) -> TokenMap:
        """The map in force; raise :class:`TokenMapError` when it never could be read."""
        with self._lock:
            if self._monotonic() - self._loaded_at >= self._ttl:
                try:
                    self._map = self._load()
                except TokenMapError as error:
                    if self._map is None:
                        raise
                    run_logger("api", "-", None, None).error(f"keeping the previous token map: {error}")
                self._loaded_at = self._monotonic()
            assert self._map is not None
            return self._map

    def _load(self) -> TokenMap:
        if self._inline:
            return parse_token_map(self._inline, "BATCHCAST_API_TOKENS")
        if self._blobs is None:
            return TokenMap()
        try:
            data = self._blobs.read(layout.API_TOKENS)
        except NotFound:
            return TokenMap()
        return parse_token_map(data, layout.API_TOKENS)

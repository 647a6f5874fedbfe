"""API keys → tenant. Open (every request is tenant "") when no key is configured."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.errors import ApiError

ANONYMOUS = ""


class Authenticator:
    def __init__(self, api_keys: Mapping[str, str]) -> None:
        self._tenants = dict(api_keys)

    @property
    def open(self) -> bool:
        return not self._tenants

    def tenant(self, authorization: str | None) -> str:
        """The tenant of an `Authorization: Bearer <key>` header; raises a 401 ApiError."""
        if not self._tenants:
            return ANONYMOUS
        if not authorization:
            raise ApiError(
                401, "missing API key (Authorization: Bearer <key>)", code="missing_api_key"
            )
        scheme, _, key = authorization.partition(" ")
        tenant = self._tenants.get(key.strip()) if scheme.lower() == "bearer" else None
        if tenant is None:
            raise ApiError(401, "invalid API key", code="invalid_api_key")
        return tenant

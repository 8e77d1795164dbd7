"""Route dependencies: the app's services and API-key authorisation.

Keys come from ``AQA_API_KEYS`` (``key:role`` pairs). A ``read`` key may read jobs, batches and models;
a ``score`` key may also submit videos. No keys configured: every request is allowed (local use).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from service.dispatch import Services
from service.errors import ApiError
from service.settings import Role

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False,
    description="An API key from AQA_API_KEYS: a 'read' key for GET routes, a 'score' key to submit videos.",
)


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def _role_of(key: str, keys: dict[str, Role]) -> Role | None:
    role = None
    for known, known_role in keys.items():  # compare with every key, in constant time each
        if hmac.compare_digest(key.encode(), known.encode()):
            role = known_role
    return role


def _authorizer(needed: Role):
    def authorize(services: ServicesDep, key: Annotated[str | None, Security(api_key_header)] = None) -> None:
        keys = services.settings.api_keys
        if not keys:
            return
        if not key:
            raise ApiError(401, "missing_api_key", "This server needs an API key in the X-API-Key header.",
                           headers={"WWW-Authenticate": "APIKey"})
        role = _role_of(key, keys)
        if role is None:
            raise ApiError(401, "invalid_api_key", "The API key in X-API-Key is not valid.",
                           headers={"WWW-Authenticate": "APIKey"})
        if needed is Role.score and role is not Role.score:
            raise ApiError(403, "forbidden",
                           "This API key may only read; submitting videos needs a key with the 'score' role.")

    return authorize


require_read = Depends(_authorizer(Role.read))
require_score = Depends(_authorizer(Role.score))

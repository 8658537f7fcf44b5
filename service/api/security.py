"""Authentication for the API: the key is checked before the request body is read.

Routers of protected routes use :class:`AuthenticatedRoute`: it authenticates the
request *before* FastAPI parses and validates the body, so an unauthenticated client
gets 401 whatever it sends (never a 422 that reveals the route's schema). The route's
``require(scope)`` dependency then checks the scope and the per-key rate limit.
Key lookups run in the default thread pool, apart from the use cases' pool, so a flood
of heavy requests cannot stall authentication.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from service.auth import ANONYMOUS, Principal
from service.errors import RateLimited, Unauthorized


async def authenticate(request: Request) -> Principal:
    """The caller's principal (cached on the request), or Unauthorized."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    state = request.app.state
    settings = state.settings
    if not settings.auth_enabled:
        principal = ANONYMOUS
    else:
        client = "ip:" + (request.client.host if request.client else "-")
        wait = state.auth_failures.peek(client)
        if wait is not None:  # guessing keys from one address is throttled before any lookup
            raise RateLimited("too many failed authentications from this address", retry_after=round(wait, 3))
        try:
            presented = request.headers.get(settings.api_key_header)
            if not presented:
                raise Unauthorized(f"missing API key (send it in the {settings.api_key_header} header)")
            principal = await run_in_threadpool(state.keys.verify, presented.strip())
        except Unauthorized:
            state.auth_failures.take(client)
            raise
    request.state.principal = principal
    return principal


class AuthenticatedRoute(APIRoute):
    """An APIRoute that authenticates before its body is parsed (see the module doc)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            await authenticate(request)
            return await handler(request)

        return authenticated


def require(scope: str | None) -> Callable:
    """FastAPI dependency factory: authenticate, check ``scope`` (None = any valid key),
    apply the per-key rate limit, and return the :class:`Principal`."""

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if scope is not None:
            principal.require(scope)
        state = request.app.state
        bucket = "key:" + principal.key_id if state.settings.auth_enabled else \
            "ip:" + (request.client.host if request.client else "-")
        wait = state.limiter.take(bucket)
        if wait is not None:
            raise RateLimited(f"rate limit of {state.settings.rate_limit_per_minute} requests per minute exceeded",
                              retry_after=round(wait, 3))
        return principal

    dependency.__name__ = f"require_{scope or 'key'}"
    return dependency

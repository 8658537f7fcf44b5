"""API key management over HTTP (the CLI, ``facegate keys``, does the same offline).

Only an unrestricted admin key may manage keys: a key limited to some collections must
not be able to mint a key for others.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api import responses as out
from service.api import schemas as S
from service.api.deps import AdminKey, KeysDep, Run
from service.api.security import AuthenticatedRoute
from service.auth import Principal
from service.errors import Forbidden

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=S.ERROR_RESPONSES, route_class=AuthenticatedRoute)


def _unrestricted(p: Principal) -> None:
    if p.collections is not None:
        raise Forbidden("only an admin key valid for every collection may manage API keys")


@router.post("", response_model=S.KeyCreated, status_code=201, summary="Create an API key (secret shown once)")
async def create_key(body: S.KeyCreate, principal: AdminKey, keys: KeysDep, run: Run) -> dict:
    _unrestricted(principal)
    rec, secret = await run(keys.create, body.name, body.scopes, body.collections)
    return {**out.api_key(rec), "secret": secret}


@router.get("", response_model=list[S.KeyOut], summary="List API keys (never their secrets)")
async def list_keys(principal: AdminKey, keys: KeysDep, run: Run) -> list:
    _unrestricted(principal)
    return [out.api_key(k) for k in await run(keys.list)]


@router.delete("/{key_id}", status_code=204, summary="Revoke an API key")
async def revoke_key(key_id: str, principal: AdminKey, keys: KeysDep, run: Run) -> Response:
    _unrestricted(principal)
    await run(keys.revoke, key_id)
    return Response(status_code=204)

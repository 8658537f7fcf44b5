"""API key management over HTTP (the CLI, ``facegate keys``, does the same offline).

Only an unrestricted admin key may manage keys: a key limited to some collections must
not be able to mint a key for others.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api import schemas as S
from service.api.auth import Principal, require
from service.errors import Forbidden

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=S.ERROR_RESPONSES)


def key_dict(k) -> dict:
    return {
        "id": k.id, "prefix": k.prefix, "name": k.name, "scopes": list(k.scopes), "collections": k.collections,
        "created_at": k.created_at, "revoked_at": k.revoked_at, "last_used_at": k.last_used_at,
    }


def _unrestricted(p: Principal) -> None:
    if p.collections is not None:
        raise Forbidden("only an admin key valid for every collection may manage API keys")


@router.post("", response_model=S.KeyCreated, status_code=201, summary="Create an API key (secret shown once)")
async def create_key(request: Request, body: S.KeyCreate, principal: Principal = Depends(require("admin"))) -> dict:
    _unrestricted(principal)
    rec, secret = await run_in_threadpool(request.app.state.keys.create, body.name, body.scopes, body.collections)
    return {**key_dict(rec), "secret": secret}


@router.get("", response_model=list[S.KeyOut], summary="List API keys (never their secrets)")
async def list_keys(request: Request, principal: Principal = Depends(require("admin"))) -> list:
    _unrestricted(principal)
    return [key_dict(k) for k in await run_in_threadpool(request.app.state.gallery.list_api_keys)]


@router.delete("/{key_id}", status_code=204, summary="Revoke an API key")
async def revoke_key(request: Request, key_id: str, principal: Principal = Depends(require("admin"))) -> Response:
    _unrestricted(principal)
    await run_in_threadpool(request.app.state.keys.revoke, key_id)
    return Response(status_code=204)

"""``facegate keys create|list|revoke``: manage API keys directly in the service database.

Works without a running server (it opens ``FACEGATE_DATABASE_URL`` / ``FACEGATE_DATA_DIR``
itself), which is how the first real admin key is made. The secret is printed once;
only its hash is stored. A running server sees a new key at once and a revoke within
a second (its verified-key cache, see ``service.auth.keys.KEY_CACHE_TTL_S``).
"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from service.cli.common import app, console, fail
from service.errors import FacegateError

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _keys():
    from service.auth.key_store import ApiKeyStore
    from service.auth.keys import KeyStore
    from service.config import Settings
    from service.storage import Database

    return KeyStore(ApiKeyStore(Database(Settings()).start()))


@keys_app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Who or what uses the key."),
    scope: list[str] = typer.Option(..., "--scope", help="admin, enroll, verify, identify, read (repeatable)."),
    collection: list[str] | None = typer.Option(
        None, "--collection", help="Restrict the key to this collection (repeatable; default: all)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create a key and print its secret (shown this once only)."""
    keys = _keys()
    try:
        rec, secret = keys.create(name, scope, collection or None)
    except FacegateError as e:
        fail(e)
    finally:
        keys.store.db.close()
    if as_json:
        print(json.dumps({"id": rec.id, "name": rec.name, "scopes": rec.scopes, "collections": rec.collections,
                          "secret": secret}))
        return
    console.print(f"created key [bold]{rec.id}[/bold] ({rec.name}) scopes={','.join(rec.scopes)}"
                  + (f" collections={','.join(rec.collections)}" if rec.collections else ""))
    console.print("secret (store it now; it cannot be shown again):")
    print(secret)


@keys_app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json")) -> None:
    """Keys with their scopes, collections and state (never the secrets)."""
    store = _keys()
    try:
        keys = store.list()
    except FacegateError as e:
        fail(e)
    finally:
        store.store.db.close()
    if as_json:
        print(json.dumps([{"id": k.id, "prefix": k.prefix, "name": k.name, "scopes": k.scopes,
                           "collections": k.collections, "revoked": k.revoked,
                           "created_at": k.created_at.isoformat(),
                           "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None} for k in keys]))
        return
    t = Table(title=f"{len(keys)} API key(s)")
    for col in ("id", "prefix", "name", "scopes", "collections", "state", "last used"):
        t.add_column(col)
    for k in keys:
        t.add_row(k.id, k.prefix, k.name, ",".join(k.scopes), ",".join(k.collections or []) or "all",
                  "revoked" if k.revoked else "active", k.last_used_at.isoformat() if k.last_used_at else "-")
    console.print(t)


@keys_app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="Key id (from `facegate keys list`).")) -> None:
    """Revoke a key (kept for audit, refused from now on)."""
    keys = _keys()
    try:
        rec = keys.revoke(key_id)
    except FacegateError as e:
        fail(e)
    finally:
        keys.store.db.close()
    console.print(f"revoked {rec.id} ({rec.name})")

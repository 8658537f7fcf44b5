"""Request parsing shared by every image-taking route: multipart *or* JSON with base64.

One dependency, :func:`image_request`, turns either body into an :class:`ImageRequest`:

* ``multipart/form-data``: image files in parts named ``image`` (repeatable; the batch
  routes take several) and ``image2`` (the second verify image); other parts are plain
  form fields, parsed as JSON when they look like JSON (``[...]``/``{...}``) so an
  embedding or metadata can travel in a form too. A text part in an image field is read
  as base64, like the JSON form.
* ``application/json``: an object whose ``image``/``image2`` are base64 strings, with or
  without a ``data:image/...;base64,`` prefix, and ``images`` a list of them.

Anything else is ``unsupported_media_type`` (415), and so is a file part that declares a
non-image content type. The body size limit is enforced by
:class:`service.api.middleware.BodyLimitMiddleware` while the body streams in, before this
module sees it. The image bytes are not decoded here: decoding is CPU work and runs in the
threadpool, in the routes, where its typed errors get tagged with the field they came from.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from service.errors import ImageTooLarge, InvalidRequest, NotAnImage, UnsupportedMediaType
from service.pipeline.prepare import ImageInput

IMAGE_FIELDS = ("image", "image2")
#: JSON and multipart spelling of a batch: ``images`` entries join the ``image`` list.
BATCH_FIELD = "images"
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.IGNORECASE)
_WS = re.compile(r"\s+")

M = TypeVar("M", bound=BaseModel)


@dataclass
class ImageRequest:
    """A parsed body: images by field name, every other field as sent."""

    kind: str  # "multipart" | "json"
    images: dict[str, list[ImageInput]] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)

    def all(self, name: str = "image") -> list[ImageInput]:
        return list(self.images.get(name, []))

    def one(self, name: str = "image", *, required: bool = True) -> ImageInput | None:
        """Exactly one image in ``name`` (or None when optional and absent)."""
        got = self.images.get(name, [])
        if not got:
            if required:
                raise InvalidRequest(f"the request has no '{name}' image", field=name)
            return None
        if len(got) > 1:
            raise InvalidRequest(f"'{name}' must be one image here; got {len(got)}", field=name)
        return got[0]

    def parse(self, model: type[M]) -> M:
        """Validate the non-image fields with ``model`` (typed 422 ``invalid_request``)."""
        data = {k: v for k, v in self.fields.items() if k not in IMAGE_FIELDS and k != BATCH_FIELD}
        try:
            return model.model_validate(data)
        except ValidationError as e:
            errors = [{"loc": [str(x) for x in err["loc"]], "msg": err["msg"], "type": err["type"]} for err in e.errors()]
            first = errors[0]
            raise InvalidRequest(f"invalid request: {'.'.join(first['loc'])}: {first['msg']}", errors=errors) from None


def decode_base64_image(text: str, field_name: str, max_bytes: int) -> bytes:
    """Base64 (standard or URL-safe, padding optional, data-URL prefix optional) -> bytes."""
    if not isinstance(text, str):
        raise InvalidRequest(f"'{field_name}' must be a base64 string", field=field_name)
    s = _DATA_URL.sub("", text.strip(), count=1)
    s = _WS.sub("", s)
    if not s:
        return b""  # an empty image: the decoder answers with the typed empty_image
    # 4 base64 characters carry 3 bytes: refuse before allocating the decoded copy.
    if len(s) // 4 * 3 > max_bytes:
        raise ImageTooLarge(f"'{field_name}' decodes to more than {max_bytes} bytes", limit=max_bytes, field=field_name)
    s += "=" * (-len(s) % 4)
    try:
        if "-" in s or "_" in s:
            return base64.b64decode(s, altchars=b"-_", validate=True)
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise NotAnImage(f"'{field_name}' is not valid base64", field=field_name) from None


def _b64(text: str, field_name: str, max_bytes: int) -> bytes:
    return decode_base64_image(text, field_name, max_bytes)


def _maybe_json(value: str) -> Any:
    v = value.strip()
    if v[:1] in "[{":
        try:
            return json.loads(v)
        except (ValueError, RecursionError):  # too deep is not JSON we accept either
            return value
    return value


_OK_PART_TYPES = ("image/", "application/octet-stream")


async def _parse_multipart(request: Request, max_bytes: int) -> ImageRequest:
    out = ImageRequest(kind="multipart")
    # The spooled upload files are closed by Starlette when the request ends.
    form = await request.form(max_files=256, max_fields=256, max_part_size=max_bytes)
    for name, value in form.multi_items():
        target = "image" if name == BATCH_FIELD else name
        if isinstance(value, UploadFile):
            if target not in IMAGE_FIELDS:
                raise InvalidRequest(f"unexpected file part '{name}'; images go in 'image' (and 'image2')", field=name)
            ctype = (value.content_type or "").split(";")[0].strip().lower()
            if ctype and not ctype.startswith(_OK_PART_TYPES):
                raise UnsupportedMediaType(
                    f"part '{name}' declares content type {ctype!r}; send an image (image/*)", field=name,
                    content_type=ctype,
                )
            data = await value.read()
            out.images.setdefault(target, []).append(ImageInput(data, name, value.filename))
        elif target in IMAGE_FIELDS:
            data = _b64(value, name, max_bytes)
            out.images.setdefault(target, []).append(ImageInput(data, name))
        else:
            if name in out.fields:
                raise InvalidRequest(f"field '{name}' is given twice", field=name)
            out.fields[name] = _maybe_json(value)
    return out


async def _parse_json(request: Request, max_bytes: int) -> ImageRequest:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError as e:
        raise InvalidRequest(f"the body is not valid JSON: {e}") from None
    except RecursionError:  # e.g. 100k nested '[': json.loads overflows the stack
        raise InvalidRequest("the JSON body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the JSON body must be an object")
    out = ImageRequest(kind="json")
    for name in IMAGE_FIELDS:
        v = body.get(name)
        if v is not None:
            out.images.setdefault(name, []).append(ImageInput(_b64(v, name, max_bytes), name))
    batch = body.get(BATCH_FIELD)
    if batch is not None:
        if not isinstance(batch, list):
            raise InvalidRequest("'images' must be a list of base64 strings", field=BATCH_FIELD)
        for i, v in enumerate(batch):
            fname = f"images[{i}]"
            out.images.setdefault("image", []).append(ImageInput(_b64(v, fname, max_bytes), fname))
    out.fields = {k: v for k, v in body.items() if k not in IMAGE_FIELDS and k != BATCH_FIELD}
    return out


async def image_request(request: Request) -> ImageRequest:
    """FastAPI dependency: the request's images and fields, from multipart or JSON."""
    settings = request.app.state.settings
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        return await _parse_multipart(request, settings.max_image_bytes)
    if ctype == "application/json" or ctype.endswith("+json"):
        return await _parse_json(request, settings.max_image_bytes)
    raise UnsupportedMediaType(
        f"content type {ctype or '(none)'!r} is not accepted; send multipart/form-data or application/json",
        content_type=ctype,
    )


# --- OpenAPI ------------------------------------------------------------------------------------------
def image_body_openapi(
    model: type[BaseModel],
    *,
    images: dict[str, str],
    json_example: dict[str, Any],
    multipart_example: dict[str, Any] | None = None,
    required_images: tuple[str, ...] = ("image",),
) -> dict[str, Any]:
    """``openapi_extra`` describing both body forms of a route that reads images manually.

    ``images`` maps each image field to its description; ``model`` holds the other fields
    (kept flat so its schema inlines without ``$defs``).
    """
    schema = model.model_json_schema()
    props = dict(schema.get("properties", {}))
    required = list(schema.get("required", []))
    json_props = {
        name: {"type": "string", "description": f"{desc} Base64, optionally as a data URL."}
        for name, desc in images.items()
        if name != BATCH_FIELD
    }
    if BATCH_FIELD in images:
        json_props[BATCH_FIELD] = {
            "type": "array", "items": {"type": "string"}, "description": images[BATCH_FIELD] + " Base64 strings."
        }
    mp_props: dict[str, Any] = {}
    for name, desc in images.items():
        if name == BATCH_FIELD:
            continue
        mp_props[name] = {"type": "string", "format": "binary", "description": desc}
    for name, p in props.items():
        mp_props[name] = {**p, "description": p.get("description", "") + " (form field; JSON text for lists/objects)"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": mp_props,
                               "required": [n for n in required_images if n != BATCH_FIELD] + required},
                    **({"example": multipart_example} if multipart_example else {}),
                },
                "application/json": {
                    "schema": {"type": "object", "properties": {**json_props, **props},
                               "required": [n for n in required_images if n != BATCH_FIELD] + required},
                    "example": json_example,
                },
            },
        }
    }

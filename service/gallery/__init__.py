"""The gallery: identities and their faces in a database (the source of truth) and a
FAISS index per (collection, model) derived from it. The API uses :class:`Gallery` only.
"""

from service.gallery.gallery import EmbedFn, Gallery, decode_crop, encode_crop
from service.gallery.records import (
    ApiKey,
    Collection,
    EnrollFace,
    Face,
    GallerySize,
    IdentifyResult,
    Identity,
    Job,
    Match,
    Page,
)

__all__ = [
    "ApiKey",
    "Collection",
    "EmbedFn",
    "EnrollFace",
    "Face",
    "Gallery",
    "GallerySize",
    "IdentifyResult",
    "Identity",
    "Job",
    "Match",
    "Page",
    "decode_crop",
    "encode_crop",
]

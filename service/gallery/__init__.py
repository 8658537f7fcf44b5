"""The gallery: collections, identities and their faces in a database (the source of truth)
and vector indexes per (collection, model) derived from it. Use cases talk to
:class:`Gallery` and its records only.
"""

from service.gallery.crops import decode_crop, encode_crop
from service.gallery.gallery import Gallery
from service.gallery.jobs import EmbedFn
from service.gallery.limits import MAX_EXTERNAL_ID, MAX_NAME, metadata_problem
from service.gallery.records import (
    Collection,
    EnrollFace,
    FaceHit,
    FaceRecord,
    GallerySize,
    Identity,
    Job,
    Page,
)
from service.gallery.vectors import normalise

__all__ = [
    "MAX_EXTERNAL_ID",
    "MAX_NAME",
    "Collection",
    "EmbedFn",
    "EnrollFace",
    "FaceHit",
    "FaceRecord",
    "Gallery",
    "GallerySize",
    "Identity",
    "Job",
    "Page",
    "decode_crop",
    "encode_crop",
    "metadata_problem",
    "normalise",
]

"""The gallery: collections, identities and their faces in a database (the source of truth)
and vector indexes per (collection, model) derived from it. Use cases talk to
:class:`Gallery` and its records only.
"""

from service.gallery.crops import decode_crop, encode_crop
from service.gallery.gallery import Gallery
from service.gallery.jobs import EmbedFn
from service.gallery.limits import MAX_EXTERNAL_ID, MAX_NAME, metadata_problem
from service.gallery.records import *  # noqa: F403 - the records are this package's API
from service.gallery.records import __all__ as _records
from service.gallery.vectors import normalise

__all__ = [
    "MAX_EXTERNAL_ID",
    "MAX_NAME",
    "EmbedFn",
    "Gallery",
    "decode_crop",
    "encode_crop",
    "metadata_problem",
    "normalise",
    *_records,
]

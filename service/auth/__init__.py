"""API keys (hashed, scoped, per collection), the caller's principal, and rate limits.

Keys live in the service database but are not gallery data: this package has its own
store (``key_store.py``) over :class:`service.storage.Database`.
"""

from service.auth.keys import KeyStore, generate_key, hash_key
from service.auth.limiter import TokenBucketLimiter
from service.auth.principal import ANONYMOUS, SCOPES, Principal, check_scopes

__all__ = ["ANONYMOUS", "SCOPES", "KeyStore", "Principal", "TokenBucketLimiter", "check_scopes", "generate_key",
           "hash_key"]

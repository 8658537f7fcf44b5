"""facegate inference service: decode, detect, align, embed, verify, identify.

This package must import without torch; training depends on it, never the reverse.
"""

__version__ = "0.1.0"

"""Operator defaults shared by `llavakit serve`, `llavakit web` and the image policy.

Kept free of imports so the command line can show them without loading PIL or torch.
"""

MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Largest encoded image a client may send (bytes, before base64)."""
MAX_IMAGE_PIXELS = 40_000_000
"""Largest image canvas (width x height), checked from the header before decoding; the server
and the web UI refuse the same images."""
RETRY_AFTER_S = 1
"""Seconds a client refused for a full queue (HTTP 429) is asked to wait before retrying."""

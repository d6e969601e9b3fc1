"""DKIM signing (RFC 6376, RFC 8463): keys, relaxed canonicalisation, signatures; ARC
sealing (RFC 8617) through dkimpy.

Beside ``smtp`` in the layers: it imports only ``message``, ``_config`` and ``_exceptions``.
``cryptography`` (``asyncmail[dkim]``) is imported only when a key is loaded.
"""

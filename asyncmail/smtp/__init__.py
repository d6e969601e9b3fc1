"""Layer 2, the protocol: the handshake, the wire, one transaction and the judge of its replies.

Internal: import the public names from ``asyncmail``. Imports only the layers below
(``asyncmail._config``, ``asyncmail._exceptions``).
"""

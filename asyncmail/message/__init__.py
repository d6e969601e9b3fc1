"""Layer 1, values and bytes: addresses, headers, the message, rendering, wire content.

Internal: import the public names from ``asyncmail``. Imports only ``asyncmail._exceptions``.
"""

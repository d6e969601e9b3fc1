"""Layer 5, batch sending: recipients files, templates and the write-ahead journal.

Internal: import the public names from ``asyncmail``. Imports only the layers below.
"""

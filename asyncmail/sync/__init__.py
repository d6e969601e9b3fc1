"""From synchronous code: a Mailer kept warm in an event loop of its own (``SyncMailer``).

Internal: import the public names from ``asyncmail``. Imports only the layers below.
"""

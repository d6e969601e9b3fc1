"""Layer 4, delivery: the Mailer, the session driver, jobs, retries and the rate limiter.

Internal: import the public names from ``asyncmail``. Imports only the layers below.
"""

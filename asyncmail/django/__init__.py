"""Django's mail through asyncmail: ``EMAIL_BACKEND = "asyncmail.django.EmailBackend"``.

Needs Django (``pip install 'asyncmail[django]'``); importing ``asyncmail`` itself never
imports Django. The settings it reads:

- ``ASYNCMAIL_URL`` (or the environment variable of that name): the server, as for
  ``Mailer``, such as ``smtps://user:pass@smtp.example.com``. Without it the server is
  built from ``EMAIL_HOST``, ``EMAIL_PORT``, ``EMAIL_HOST_USER``, ``EMAIL_HOST_PASSWORD``,
  ``EMAIL_USE_TLS`` (STARTTLS), ``EMAIL_USE_SSL`` (implicit TLS) and ``EMAIL_TIMEOUT``.
- ``ASYNCMAIL_OPTIONS``: a dict of ``Mailer`` keyword arguments (``max_connections``,
  ``retry``, ``rate_limit``...).
"""

from ._backend import EmailBackend as EmailBackend
from ._backend import close_mailers as close_mailers

__all__ = ("EmailBackend", "close_mailers")

# Public objects report this package as their home, so reprs and docs read "asyncmail.django.X".
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name

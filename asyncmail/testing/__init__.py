"""Test tools for code that sends mail: a real capture server, faults, pytest fixtures."""

__all__: tuple[str, ...] = ()

"""Forwarding rules: ``alice@example.com: alice@gmail.com, bob@qq.com``, one rule a line.

The key is a whole address (case does not matter); its targets replace it in the envelope.
A target may be the key itself (keep a copy here and forward one). Rules are applied once:
a target is never looked up again, so rules cannot loop. ``#`` starts a comment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .._exceptions import ConfigError, MessageError
from ..message._address import unique_addresses, validate_addr_spec

__all__ = ["Aliases", "address_key"]


def address_key(address: str) -> str:
    """How an address is looked up in the rules: the whole address, lower case."""
    return address.lower()


@dataclass(frozen=True, slots=True)
class Aliases:
    """The forwarding rules: an address to the addresses it goes to instead."""

    rules: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, text: str, source: str = "aliases") -> Aliases:
        """Read rules from ``text`` (the format of the module docstring).

        Raises:
            ConfigError: A line that is not ``address: address[, address...]``, an invalid
                address, or a key given twice (naming ``source`` and the line).
        """
        rules: dict[str, tuple[str, ...]] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.partition("#")[0].strip()
            if not line:
                continue
            where = f"{source} line {number}"
            key, colon, rest = line.partition(":")
            targets = [t.strip() for t in rest.split(",") if t.strip()]
            if not colon or not targets:
                raise ConfigError(f"{where}: expected 'address: address, address...'")
            try:
                validate_addr_spec(key.strip(), "the key")
                for target in targets:
                    validate_addr_spec(target, "a target")
            except MessageError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            name = address_key(key.strip())
            if name in rules:
                raise ConfigError(f"{where}: {key.strip()} has a rule already")
            rules[name] = unique_addresses(targets)
        return cls(MappingProxyType(rules))

    @classmethod
    def from_file(cls, path: str | Path) -> Aliases:
        """Read rules from a UTF-8 file.

        Raises:
            ConfigError: The file cannot be read, or a rule is malformed.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the alias file {path}: {exc}") from None
        return cls.parse(text, str(path))

    def targets(self, address: str) -> tuple[str, ...] | None:
        """Where mail to ``address`` goes instead; None when no rule names it."""
        return self.rules.get(address_key(address))

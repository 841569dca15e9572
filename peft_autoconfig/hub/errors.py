"""Errors of the Hub integration: each names the repo (or folder) and, for a bad file, the field.

They subclass the matching built-in (`ValueError`, `FileNotFoundError`, `PermissionError`, `ConnectionError`) so
callers can catch them generically, and `HubError` so the CLI can print one clean line for all of them.
"""

from __future__ import annotations


class HubError(Exception):
    """Base class of every error raised by `peft_autoconfig.hub`."""


class HubConfigError(HubError, ValueError):
    """A front.json or PEFT config that is malformed, of an unknown PEFT type, or that names no usable point."""


class HubNotFoundError(HubError, FileNotFoundError):
    """The repo, revision or file does not exist (or is private and no valid token was sent)."""


class HubAuthError(HubError, PermissionError):
    """The Hub refused the token (401/403)."""


class HubConnectionError(HubError, ConnectionError):
    """The Hub could not be reached and nothing usable is cached."""

"""The Gemini API key: in the operating system's keyring, never in a file Concord writes (no Qt).

The key is stored with the ``keyring`` package (Windows Credential Locker,
macOS Keychain, the Secret Service on Linux desktops) under the service
``Concord`` and the name ``gemini-api-key``.  It is never written to the
settings file, the database or a log, and no message here contains it.

Where no keyring backend is available (common on headless Linux:
``keyring.errors.NoKeyringError``), or the keyring is locked or broken, the
key is read from the environment, ``GEMINI_API_KEY`` then ``GOOGLE_API_KEY``
(the variables the Gemini backend itself reads), and cannot be stored or
removed from Concord: :func:`set_api_key` and :func:`delete_api_key` raise
:class:`ApiKeyError` saying so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

KEYRING_SERVICE = "Concord"
KEYRING_USERNAME = "gemini-api-key"
#: Read, in this order, when the keyring holds no key or there is no keyring.
ENVIRONMENT_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

log = logging.getLogger(__name__)


class ApiKeyError(RuntimeError):
    """The key could not be stored or removed; the message (one line) says why and what to do."""


class KeyringUnavailable(ApiKeyError):
    """No usable keyring backend on this computer."""


@dataclass(frozen=True)
class ApiKeyStatus:
    """Where the Gemini API key comes from, for the settings dialog (never the key itself).

    ``source`` is ``"keyring"``, the name of the environment variable it is
    read from, or ``""`` when there is no key.  ``keyring_available`` says
    whether a key can be stored from Concord.  ``message`` is one line for the user.
    """

    source: str
    keyring_available: bool
    message: str

    @property
    def has_key(self) -> bool:
        return bool(self.source)


def _unavailable_reason(exc: BaseException) -> str:
    import keyring.errors

    if isinstance(exc, keyring.errors.NoKeyringError):
        return "no system keyring is available on this computer"
    if isinstance(exc, keyring.errors.KeyringLocked):
        return "the system keyring is locked"
    return f"the system keyring failed ({type(exc).__name__})"


def _read_keyring() -> tuple[str | None, str | None]:
    """(key or None, None) from the keyring, or (None, reason) when the keyring cannot be used."""
    import keyring

    try:
        value = keyring.get_password(KEYRING_SERVICE, KEYRING_USERNAME)
    except Exception as exc:  # NoKeyringError, KeyringLocked, D-Bus errors of a backend ...
        return None, _unavailable_reason(exc)
    return (value or None), None


def _read_environment() -> tuple[str | None, str]:
    for name in ENVIRONMENT_VARIABLES:
        value = (os.environ.get(name) or "").strip()
        if value:
            return value, name
    return None, ""


def get_api_key() -> str | None:
    """The Gemini API key: the keyring's, else ``$GEMINI_API_KEY``, else ``$GOOGLE_API_KEY``; or None."""
    value, reason = _read_keyring()
    if value:
        return value
    if reason:
        log.info("%s; reading the Gemini API key from the environment (%s)",
                 reason, " or ".join(ENVIRONMENT_VARIABLES))
    return _read_environment()[0]


def api_key_status() -> ApiKeyStatus:
    """Where :func:`get_api_key` would find the key, and whether Concord can store one."""
    value, reason = _read_keyring()
    env_value, env_name = _read_environment()
    variables = " or ".join(ENVIRONMENT_VARIABLES)
    if reason:
        if env_value:
            message = (f"{reason.capitalize()}: the key is read from {env_name} (read-only here; "
                       f"change it in the environment).")
        else:
            message = (f"{reason.capitalize()}: set {variables} in the environment to use Gemini; "
                       "Concord cannot store the key here.")
        return ApiKeyStatus(env_name, False, message)
    if value:
        return ApiKeyStatus("keyring", True, "A key is stored in the system keyring.")
    if env_value:
        return ApiKeyStatus(env_name, True, f"The key is read from {env_name}; "
                                            "a key entered here is stored in the system keyring.")
    return ApiKeyStatus("", True, "No key yet: a key entered here is stored in the system keyring.")


def set_api_key(key: str) -> None:
    """Store ``key`` in the keyring (replacing any); :class:`ApiKeyError` if it cannot be."""
    import keyring

    key = key.strip()
    if not key:
        raise ApiKeyError("the API key is empty")
    if any(c.isspace() or not c.isprintable() for c in key):
        raise ApiKeyError("the API key contains spaces or control characters; paste it again")
    try:
        keyring.set_password(KEYRING_SERVICE, KEYRING_USERNAME, key)
    except Exception as exc:
        raise _store_error(exc, "stored") from None
    log.info("Gemini API key stored in the system keyring")


def delete_api_key() -> bool:
    """Remove the key from the keyring; True if one was there.  :class:`ApiKeyError` if it cannot be."""
    import keyring
    import keyring.errors

    value, reason = _read_keyring()
    if reason:
        raise KeyringUnavailable(f"{reason}, so there is no stored key to remove; a key in "
                                 f"{' or '.join(ENVIRONMENT_VARIABLES)} is changed in the environment")
    if value is None:
        return False
    try:
        keyring.delete_password(KEYRING_SERVICE, KEYRING_USERNAME)
    except keyring.errors.PasswordDeleteError:
        return False
    except Exception as exc:
        raise _store_error(exc, "removed") from None
    log.info("Gemini API key removed from the system keyring")
    return True


def _store_error(exc: BaseException, verb: str) -> ApiKeyError:
    import keyring.errors

    reason = _unavailable_reason(exc)
    variables = " or ".join(ENVIRONMENT_VARIABLES)
    if isinstance(exc, keyring.errors.NoKeyringError):
        return KeyringUnavailable(f"the API key cannot be {verb}: {reason}; "
                                  f"set {variables} in the environment instead")
    return ApiKeyError(f"the API key cannot be {verb}: {reason}")

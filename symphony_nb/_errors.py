"""The errors symphony_nb raises.

Every error derives from :class:`SymphonyError`, and each also derives from the builtin it
resembles, so ``except ValueError`` keeps working in code that does not know this package::

    SymphonyError
    ├── InvalidIdError        (ValueError)   an id that cannot be stored safely
    ├── FilterError           (ValueError)   a filter or ordering that does not fit the model
    ├── TemplateError         (ValueError)   an instruction template that cannot be rendered
    ├── RowValidationError    (ValueError)   rows of a batch that do not validate
    ├── UnstorableEntityError (ValueError)   an entity no backend can store faithfully
    ├── CorruptEntityError    (ValueError)   stored data that does not parse or validate
    │   └── SchemaVersionError                 a document written by a newer model than this one
    ├── SchemaError           (TypeError)    a model's schema versions or upgraders that cannot work
    ├── InvalidArgumentError  (ValueError)   an argument that does not fit (fields, overrides)
    │   └── KeyringError                     a key or keyring that cannot be used
    ├── EncryptionError       (ValueError)   a secret that cannot be encrypted (no keyring)
    ├── DecryptionError       (ValueError)   a stored secret that does not decrypt
    ├── ConflictError                        a write based on a stale version
    ├── NotFoundError         (LookupError)  a missing entity, repository or service
    ├── TaskStateError        (RuntimeError) a task not in the state the operation needs
    ├── LanguageModelError    (RuntimeError) a language model that failed or gave no text
    ├── SyncUsageError        (RuntimeError) a sync call made where it would deadlock
    └── StorageError          (OSError)      the storage itself failed or cannot be reached
        └── InvalidUrlError   (ValueError)   a storage URL that is malformed or names no backend

    CorruptEntityWarning      (UserWarning)  a corrupt entity skipped by on_corrupt="warn"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class SymphonyError(Exception):
    """Base class of every error raised by symphony_nb."""


class InvalidIdError(SymphonyError, ValueError):
    """An entity id that could escape, confuse or collide in a storage backend."""


class FilterError(SymphonyError, ValueError):
    """A filter, ordering or column selection that does not fit the model."""


class TemplateError(SymphonyError, ValueError):
    """An instruction template with a placeholder that has no value."""


class UnstorableEntityError(SymphonyError, ValueError):
    """An entity that cannot be stored faithfully (it does not serialise, or holds NUL text)."""


class CorruptEntityError(SymphonyError, ValueError):
    """Stored data that does not parse or validate; ``location`` says where it is."""

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"corrupt entity at {location}: {reason}")


class SchemaVersionError(CorruptEntityError):
    """A stored document whose schema version is newer than its model's ``__schema_version__``.

    It was written by a newer definition of the model; reading it with this one would drop or
    misread its fields, so it is refused. ``entity_id``, ``stored`` and ``supported`` say which.
    """

    def __init__(self, location: str, entity_id: str, stored: int, supported: int) -> None:
        self.entity_id = entity_id
        self.stored = stored
        self.supported = supported
        super().__init__(
            location,
            f"{entity_id!r} has schema version {stored}, newer than the {supported} this model "
            "supports; read it with the newer model definition (or upgrade the code that defines it)",
        )


class SchemaError(SymphonyError, TypeError):
    """A model's schema declaration that cannot work.

    A ``__schema_version__`` that is not a positive int, an upgrader that is not callable or
    claims a step another upgrader of the same definition has, or a gap in the chain of
    upgraders (a step no upgrader covers).
    """


class InvalidArgumentError(SymphonyError, ValueError):
    """An argument that does not fit: an unknown field, an invalid override, a bad option."""


class KeyringError(InvalidArgumentError):
    """A key of the wrong length or form, a bad key id, or a primary key not in the keyring."""


class EncryptionError(SymphonyError, ValueError):
    """A secret that cannot be encrypted: the repository has no keyring. Nothing was stored."""


class DecryptionError(SymphonyError, ValueError):
    """A stored secret that does not decrypt: wrong or unknown key, tampered or moved.

    ``location`` says where the entity is stored, ``field`` the secret's path in it and
    ``key_id`` the key it names (None when the stored value names none). The message never
    holds a key or a plaintext.
    """

    def __init__(self, location: str, field: str, key_id: str | None, reason: str) -> None:
        self.location = location
        self.field = field
        self.key_id = key_id
        self.reason = reason
        key = "" if key_id is None else f" (key {key_id!r})"
        super().__init__(f"cannot decrypt secret {field!r}{key} of {location}: {reason}")


class TaskStateError(SymphonyError, RuntimeError):
    """A task that is not in the state the operation needs (say, run again without rerun)."""


class LanguageModelError(SymphonyError, RuntimeError):
    """A language model call that failed in a way no task can record, or returned no text."""


class HistoryError(SymphonyError, RuntimeError):
    """A history operation on a repository that keeps no history (open it with ``history=``)."""


class SyncUsageError(SymphonyError, RuntimeError):
    """The sync facade was called where it would deadlock; use ``await`` there instead."""


class CorruptEntityWarning(UserWarning):
    """Issued for each corrupt entity skipped by a read with ``on_corrupt="warn"``."""


class ConflictError(SymphonyError):
    """A write whose version is not the stored one: someone else changed the entity first."""

    def __init__(self, entity_id: str, given: int | None, stored: int | None) -> None:
        self.entity_id = entity_id
        self.given = given
        self.stored = stored
        super().__init__(
            f"version conflict on {entity_id!r}: the write is based on version {given}, "
            f"but version {stored} is stored; reload it, reapply the change and save again"
        )


class NotFoundError(SymphonyError, LookupError):
    """A missing entity, repository or service."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class StorageError(SymphonyError, OSError):
    """The storage failed (I/O error, unreachable database); the message says what is known.

    ``written`` holds the ids whose new version did reach the storage before the failure
    (their durability may be unknown); the objects saved for them carry the new version.
    """

    def __init__(self, message: str, *, written: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.written = tuple(written)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RowValidationError(SymphonyError, ValueError):
    """Several rows failed validation; ``problems`` maps each row id to its field errors."""

    def __init__(self, problems: Mapping[str, Sequence[tuple[str, str]]]) -> None:
        self.problems = {key: list(value) for key, value in problems.items()}
        lines = [
            f"  {row_id}: {field}: {message}"
            for row_id, errors in self.problems.items()
            for field, message in errors
        ]
        super().__init__(
            f"{len(self.problems)} row(s) failed validation; nothing was saved:\n"
            + "\n".join(lines)
        )


class InvalidUrlError(StorageError, ValueError):
    """A storage URL that is malformed or names no known backend; nothing was opened.

    The message shows the URL with any password masked, never the password itself.
    """

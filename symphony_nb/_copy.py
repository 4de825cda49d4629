"""Move data between backends."""

from __future__ import annotations

from ._encryption import document_of
from ._repository import Repository
from ._types import T
from .stores import Record


async def copy_repository(
    source: Repository[T],
    target: Repository[T],
    *,
    batch_size: int = 1000,
    progress: bool = True,
) -> int:
    """Copy every entity of ``source`` into ``target``, keeping ids and versions; return the count.

    Entities are validated on the way (a corrupt one stops the copy with
    :class:`CorruptEntityError`), written in batches of ``batch_size`` (each batch all or
    nothing where the target allows), and replace entities of the same id in ``target``.
    Shows a progress bar (``tqdm.auto``) unless ``progress=False``.
    """
    if source.model is not target.model:
        raise TypeError(
            f"cannot copy {source.model.__name__} entities into a {target.model.__name__} repository"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    from tqdm.auto import tqdm

    copied = 0
    total = await source.count()
    with tqdm(total=total, desc=f"copy {source.model.__name__}", disable=not progress) as bar:
        batch: list[T] = []
        async for entity in source.iter_all(batch_size=batch_size):
            batch.append(entity)
            if len(batch) == batch_size:
                copied += await _write_as_is(target, batch)
                bar.update(len(batch))
                batch = []
        if batch:
            copied += await _write_as_is(target, batch)
            bar.update(len(batch))
    return copied


async def _write_as_is(target: Repository[T], entities: list[T]) -> int:
    """Write ``entities`` to ``target``'s store with their own versions, replacing any there."""
    records = []
    for entity in entities:
        version = getattr(entity, "version", None)
        records.append(
            Record(
                str(getattr(entity, "id", "")),
                document_of(entity),  # secrets revealed, for the target's keyring to seal
                version if isinstance(version, int) else None,
                None,
            )
        )
    await target.store.write(records, create=True)
    return len(records)

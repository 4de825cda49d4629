"""Move data between backends."""

from __future__ import annotations

from ._filters import Query
from ._repository import Record, Repository, T


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
        query = Query(limit=batch_size)
        while True:
            rows = await source._select(query)
            entities = source._decode_many(rows, "raise")
            records = [
                Record(
                    entity.id,  # type: ignore[attr-defined]
                    entity.model_dump_json(by_alias=True),
                    getattr(entity, "version", None),
                    None,
                )
                for entity in entities
            ]
            if records:
                await target._write(records, create=True)
            copied += len(records)
            bar.update(len(records))
            if len(rows) < batch_size:
                return copied
            query = Query(limit=batch_size, after_id=rows[-1][0])

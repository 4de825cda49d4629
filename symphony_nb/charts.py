"""One-call charts of tasks, for notebooks: how many, in which status, over time and by priority.

::

    from symphony_nb.charts import task_summary
    task_summary(task_repo)          # or a DataFrame from to_dataframe(), or a list of Tasks

Needs matplotlib (``pip install 'symphony_nb[notebook]'``), imported only when a chart is drawn.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

try:
    import pandas as pd
except ImportError as exc:  # pragma: no cover - the notebook extras are missing
    raise ImportError(
        "symphony_nb's pandas face needs pandas: pip install 'symphony_nb[notebook]'"
    ) from exc

from ._models import Task, TaskPriority, TaskStatus
from ._repository import Repository
from .dataframes import to_dataframe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

View = Literal["both", "time", "priority"]
_COLUMNS = ["status", "priority", "created_at"]
_COLOURS = {
    "pending": "#9e9e9e",
    "running": "#1f77b4",
    "completed": "#2ca02c",
    "failed": "#d62728",
    "cancelled": "#ff7f0e",
}


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "charts need matplotlib: pip install 'symphony_nb[notebook]' (or pip install matplotlib)"
        ) from exc
    return plt


def task_frame(source: Repository[Task] | pd.DataFrame | Iterable[Task]) -> pd.DataFrame:
    """The status, priority and created_at columns of ``source`` as a frame."""
    if isinstance(source, pd.DataFrame):
        df = source
    elif isinstance(source, Repository):
        df = source.sync.to_dataframe(columns=_COLUMNS)
    else:
        df = to_dataframe(list(source), Task)
    missing = [column for column in _COLUMNS if column not in df.columns]
    if missing:
        raise ValueError(f"a task frame needs the columns {_COLUMNS}; missing {missing}")
    return df


def auto_freq(created: pd.Series[Any]) -> str:
    """A period that splits the span of ``created`` into a readable number of bars."""
    if created.empty:
        return "D"
    span = created.max() - created.min()
    if span <= pd.Timedelta(hours=2):
        return "min"
    if span <= pd.Timedelta(days=2):
        return "h"
    return "D" if span <= pd.Timedelta(days=90) else "W"


def status_over_time(df: pd.DataFrame, freq: str | None = None) -> pd.DataFrame:
    """Tasks created per period (rows) and status (columns, every status)."""
    statuses = [status.value for status in TaskStatus]
    if df.empty:
        return pd.DataFrame(columns=statuses, dtype="int64")
    period = df["created_at"].dt.floor(freq or auto_freq(df["created_at"]))
    table = pd.crosstab(period, df["status"].astype(str))
    return table.reindex(columns=statuses, fill_value=0)


def status_by_priority(df: pd.DataFrame) -> pd.DataFrame:
    """Task counts by priority (rows, in declaration order) and status (columns)."""
    table = pd.crosstab(df["priority"].astype(str), df["status"].astype(str))
    return table.reindex(
        index=[p.value for p in TaskPriority], columns=[s.value for s in TaskStatus], fill_value=0
    )


def task_summary(
    source: Repository[Task] | pd.DataFrame | Iterable[Task],
    *,
    view: View = "both",
    freq: str | None = None,
) -> Figure:
    """Draw tasks by status over time and/or by status and priority; return the figure.

    ``source`` is a Task repository, a frame from ``to_dataframe()`` or a list of Tasks.
    ``view`` picks ``"time"``, ``"priority"`` or ``"both"`` (side by side); ``freq`` is the
    period of the time view (a pandas frequency such as ``"h"`` or ``"D"``; chosen from the
    data's span by default).
    """
    if view not in ("both", "time", "priority"):
        raise ValueError(f"view must be 'both', 'time' or 'priority', got {view!r}")
    plt = _pyplot()
    df = task_frame(source)
    views = ["time", "priority"] if view == "both" else [view]
    fig, axes = plt.subplots(1, len(views), figsize=(6 * len(views), 4), squeeze=False)
    for ax, name in zip(axes[0], views, strict=True):
        if name == "time":
            _draw(ax, status_over_time(df, freq), "Tasks created, by status", stacked=True)
        else:
            _draw(ax, status_by_priority(df), "Tasks by priority and status", stacked=False)
    fig.tight_layout()
    # Closed so that the notebook shows the returned figure once, not twice.
    plt.close(fig)
    return fig  # type: ignore[no-any-return]


def _draw(ax: Any, table: pd.DataFrame, title: str, *, stacked: bool) -> None:
    ax.set_title(title)
    if table.to_numpy().sum() == 0:
        ax.text(0.5, 0.5, "no tasks", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    labels = [_label(value) for value in table.index]
    positions = range(len(labels))
    width = 0.8 if stacked else 0.8 / len(table.columns)
    bottom = [0] * len(labels)
    for number, status in enumerate(table.columns):
        counts = table[status].tolist()
        if stacked:
            ax.bar(
                positions, counts, width, bottom=bottom, label=status, color=_COLOURS.get(status)
            )
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        else:
            shifted = [p + (number - (len(table.columns) - 1) / 2) * width for p in positions]
            ax.bar(shifted, counts, width, label=status, color=_COLOURS.get(status))
    rotate = len(labels) > 4
    ax.set_xticks(
        list(positions), labels, rotation=30 if rotate else 0, ha="right" if rotate else "center"
    )
    ax.set_ylabel("tasks")
    ax.locator_params(axis="y", integer=True)
    ax.legend(fontsize="small")


def _label(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return (
            value.strftime("%Y-%m-%d %H:%M")
            if value != value.normalize()
            else value.strftime("%Y-%m-%d")
        )
    return str(value)

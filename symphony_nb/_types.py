"""Type variables shared by the repository and its sync face."""

from typing import TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)
"""The model type a repository stores."""

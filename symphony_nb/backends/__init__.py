"""Storage backends: each module is a Store (see :mod:`symphony_nb.stores`) and the repository class that builds it."""

"""Storage backends: each module implements the hooks of :class:`~symphony_nb.Repository`."""

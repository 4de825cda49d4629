"""Services built on the repositories: agents, tasks and the registry."""

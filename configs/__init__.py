"""ml_collections configs; each file's docstring holds the command that runs it."""

"""Dataset builders and tools that turn real environment rollouts into training data."""

"""Environments Gato acts in: task specs, and (as they land) wrappers and expert policies."""

"""In-process cancellation on anyio: operations, tokens, sources, registry."""

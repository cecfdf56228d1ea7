"""Cross-process cancellation tokens in shared memory."""

"""The pool: a supervisor in the caller's process, workers running jobs in event loops."""

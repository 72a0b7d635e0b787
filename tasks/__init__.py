"""Thin Prefect tasks: one per registered stage (``tasks.stages``), sharing ``tasks.common``."""

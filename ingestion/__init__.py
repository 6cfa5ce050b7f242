"""Ingestion: the event generator, landing-file parsing, and the dlt pipeline into ``raw``."""

"""Ingest stage: landing files -> ``raw`` (dlt), and the sensor that notices new files."""

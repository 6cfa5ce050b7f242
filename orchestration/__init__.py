"""Dagster orchestration for Sluice: one Definitions object, one folder per stage of the flow."""

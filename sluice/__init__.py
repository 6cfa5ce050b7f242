"""Sluice: orchestrated ELT analytics for product events."""

"""Serve stage: what readers open instead of the warehouse (the serving snapshot, reports)."""

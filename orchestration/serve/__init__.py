"""Serve stage: publishes the marts to the serving snapshot that readers open."""

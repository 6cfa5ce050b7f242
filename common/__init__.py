"""The shared base every other package builds on: settings, durable writes, keys, the HTTP
helpers both APIs use, and the metrics registry. It imports nothing of Sluice's own."""

"""The real-time tier: minute windows of the events that ``sluice serve`` lands, seconds after
they land, beside the batch tier that loads and builds them by day.

Tail mode (the laptop default, no extra server): ``sluice stream`` runs ``worker`` in its own
process, which reads the ingest API's landing segments by byte offset (``tail``), checks each
message against the event contract and folds it into event-time minute windows
(``windows``, revenue by the marts' rules in ``revenue``), and commits the windows and the
offsets together to a SQLite store (``store``) that ``read`` reads while it is written. See
docs/real-time.md. A stage: imports only ``common``.
"""

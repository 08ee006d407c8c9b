"""The packed online stores (SQLite, Redis) and the engine that fills them from a snapshot: one record per
(feature view, entity), written a batch at a time, read with one parse."""

"""`millet serve`: the HTTP server (server.py) and its security boundary (auth.py: who asks and what they
may read; audit.py: what was read)."""

"""Web: the FastAPI dashboard (server-rendered templates, local static assets) and /metrics."""

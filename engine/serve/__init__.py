"""`bertonnx serve`: embeddings over HTTP (needs the `serve` extra: FastAPI and uvicorn).

settings.py  limits and batching budgets (no web imports, so the CLI can read defaults)
errors.py    the errors a request can cause, each mapped to one HTTP status
batcher.py   merges concurrent requests into token-budgeted model calls on one thread
metrics.py   Prometheus text format for /metrics
schemas.py   request bodies, validated strictly
app.py       the FastAPI app, its error handlers and middleware, and `run_server`
"""

"""`bertonnx serve`: embeddings over HTTP (needs the `serve` extra: FastAPI and uvicorn).

settings.py    limits and batching budgets (no web imports, so the CLI can read defaults)
errors.py      the errors a request can cause, each mapped to one HTTP status
batcher.py     merges concurrent requests' tokenized texts into token-budgeted model calls on one thread
service.py     the embedder-facing logic: tokenize once, count tokens, queue, embed
schemas.py     request bodies, validated strictly
responses.py   vectors as JSON or base64, and the one error shape
routes.py      the endpoints
middleware.py  the body size limit and the request metrics
metrics.py     Prometheus text format for /metrics
app.py         `create_app`, composing the above
server.py      `run_server` under uvicorn, `check_can_listen`, graceful signals
"""

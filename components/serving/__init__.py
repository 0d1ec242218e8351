"""The model server: FastAPI app, model loading, fallback and metrics."""

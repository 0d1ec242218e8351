"""The model server: FastAPI app, model loading, fallback and metrics.

    api.py           request/response models, derived from components.core.schema
    loader.py        model sources (MLflow URI or bundle path), load, hot swap on alias moves
    metrics.py       Prometheus metrics (names from metric_names.py), drift window
    app.py           create_app(settings): endpoints, fallback, error handling
    settings.py      ServerSettings, from the typed config
    cli.py           `servicetime serve` and `servicetime stack ...`
"""

"""The one list of the model server's Prometheus metric names and labels.

The server registers its metrics from these constants; the alert rules, the
Prometheus config and the Grafana dashboard are rendered from them
(``components.render.monitoring``), so a metric is named exactly once.
"""

from __future__ import annotations

PREFIX = "servicetime"

# Counters (prometheus_client appends _total on exposition).
REQUESTS = f"{PREFIX}_requests"  # labels: endpoint, status
PREDICTIONS = f"{PREFIX}_predictions"  # labels: source (model | fallback)
FALLBACKS = f"{PREFIX}_fallbacks"  # labels: reason
MODEL_RELOADS = f"{PREFIX}_model_reloads"  # labels: result (ok | error)
PREDICTION_LOG_ROWS = f"{PREFIX}_prediction_log_rows"  # rows written to the prediction log
PREDICTION_LOG_DROPPED = f"{PREFIX}_prediction_log_dropped_rows"  # rows dropped (writer queue full)
MONITORING_ERRORS = f"{PREFIX}_monitoring_errors"  # bookkeeping that failed after an answer was made
HISTORY_LOOKUPS = f"{PREFIX}_history_lookups"  # stops scored; the hit rate is found / lookups
HISTORY_FOUND = f"{PREFIX}_history_found"  # stops whose customer had history in the snapshot

# Histograms (exposed as _bucket, _sum, _count).
REQUEST_LATENCY = f"{PREFIX}_request_duration_seconds"  # labels: endpoint
INFERENCE_LATENCY = f"{PREFIX}_inference_duration_seconds"
PREDICTED_SERVICE_TIME = f"{PREFIX}_predicted_service_time_seconds"
BATCH_SIZE = f"{PREFIX}_request_batch_size"

# Gauges.
MODEL_INFO = f"{PREFIX}_model_info"  # labels: name, version, alias
MODEL_LOADED = f"{PREFIX}_model_loaded"
MODEL_LOAD_SECONDS = f"{PREFIX}_model_load_duration_seconds"
MODEL_LOADED_TIMESTAMP = f"{PREFIX}_model_loaded_timestamp_seconds"
# The served model's data: when its newest training stop was, and how far the stops now served lie
# beyond it (their planned arrival, so a replay of old weeks ages as its own calendar does).
MODEL_DATA_TIMESTAMP = f"{PREFIX}_model_data_until_timestamp_seconds"  # unix time, from the bundle's lineage
MODEL_DATA_AGE = f"{PREFIX}_model_data_age_seconds"
# The customer-history snapshot the server answers with (followed, else the bundle's own).
HISTORY_CUSTOMERS = f"{PREFIX}_history_customers"  # customers in it
HISTORY_DATA_AGE = f"{PREFIX}_history_data_age_seconds"  # as MODEL_DATA_AGE, for the snapshot
INPUT_DRIFT_PSI = f"{PREFIX}_input_drift_psi"  # labels: feature
DRIFT_WINDOW_ROWS = f"{PREFIX}_drift_window_rows"
# Online quality: served predictions joined with the labels that arrived later
# (components.serving.monitor writes the report; the server exposes its latest one).
ONLINE_MAE = f"{PREFIX}_online_mae_seconds"  # labels: slice
ONLINE_BIAS = f"{PREFIX}_online_bias_seconds"  # labels: slice (prediction - actual)
ONLINE_LATE_SHARE = f"{PREFIX}_online_late_share"  # labels: slice
ONLINE_COVERAGE = f"{PREFIX}_online_interval_coverage"  # labels: slice
ONLINE_ROWS = f"{PREFIX}_online_joined_rows"  # labels: slice
ONLINE_NOMINAL_COVERAGE = f"{PREFIX}_online_interval_nominal"
ONLINE_REPORT_TIMESTAMP = f"{PREFIX}_online_report_timestamp_seconds"

# Label names, kept low-cardinality on purpose.
LABEL_ENDPOINT = "endpoint"
LABEL_STATUS = "status"
LABEL_SOURCE = "source"
LABEL_REASON = "reason"
LABEL_FEATURE = "feature"
LABEL_RESULT = "result"
LABEL_SLICE = "slice"  # "all", "area_type=urban", "new area", "new customer", ... (a fixed small set)
SLICE_ALL = "all"

# Scrape job name used by the Prometheus config, the alert rules and the dashboard.
SCRAPE_JOB = "servicetime-model-server"

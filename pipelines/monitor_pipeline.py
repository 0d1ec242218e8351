"""The third pipeline, ``servicetime-monitor``: the labels join, weekly on the cluster.

One step (``monitor_op``): the model servers' prediction log joined with the weekly
batches that have arrived since, giving online MAE, bias, late share and interval
coverage, overall and per slice (``components.serving.monitor``). The report is
versioned where the model servers read it, and logged to MLflow. The bootstrap
uploads it with a weekly recurring run.
"""

from kfp import dsl

from pipelines import ops
from pipelines.pipeline import TaskHook, with_defaults

MONITOR_PIPELINE = "servicetime-monitor"


def make_monitor_pipeline(hook: TaskHook | None = None, name: str = MONITOR_PIPELINE, defaults: dict | None = None):
    def servicetime_monitor(
        data_root: str = "",
        log_uri: str = "",
        report_uri: str = "",
        config_json: str = "",
    ):
        """Online quality: served predictions joined with the labels that arrived since.

        Args:
            data_root: The dataset root whose weekly batches carry the labels; empty: <workspace>/data.
            log_uri: The model servers' prediction log; empty: monitor.prediction_log_uri.
            report_uri: Where the versioned reports go (the model servers expose the latest); empty:
                monitor.report_uri.
            config_json: The config as JSON (components/core/config.py); empty: the defaults.
        """
        t = ops.monitor_op(config_json=config_json, data_root=data_root, log_uri=log_uri, report_uri=report_uri)
        t.set_caching_options(False)  # the log and the batches grow between runs
        if hook:
            hook(t)

    described = dsl.pipeline(name=name, description="Online quality: the prediction log joined with arrived labels")
    return described(with_defaults(servicetime_monitor, defaults or {}))


servicetime_monitor = make_monitor_pipeline()

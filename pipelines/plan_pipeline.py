"""The second pipeline, ``servicetime-plan``: next week's planned stops in, the champion's plan out.

One step (``plan_op``): score the orders with the registry's champion (or a given
model URI), the same transform and model as serving, and write per stop the service
time, its interval and the promised arrival window (``components.learn.planning``).
"""

from kfp import dsl

from pipelines import ops
from pipelines.pipeline import JOB_ID, TaskHook, with_defaults

PLAN_PIPELINE = "servicetime-plan"


def make_plan_pipeline(hook: TaskHook | None = None, name: str = PLAN_PIPELINE, defaults: dict | None = None):
    def servicetime_plan(
        orders_uri: str = "",
        out_uri: str = "",
        model_uri: str = "",
        calibration_uri: str = "",
        config_json: str = "",
    ):
        """Next week's stops: service times and promised arrival windows.

        Args:
            orders_uri: Parquet of next week's planned stops (the planning columns plus delivery_id).
            out_uri: Where the plan goes: a Parquet file, or a folder ending in / (one plan per run).
            model_uri: A model URI or bundle path; empty: the registry's champion.
            calibration_uri: Labelled held-out weeks (Parquet) to fit the arrival windows on; empty: the
                calibration saved with the model.
            config_json: The config as JSON (components/core/config.py); empty: the defaults.
        """
        t = ops.plan_op(config_json=config_json, orders_uri=orders_uri, out_uri=out_uri, model_uri=model_uri,
                        calibration_uri=calibration_uri, job_id=JOB_ID)
        t.set_caching_options(False)
        if hook:
            hook(t)

    described = dsl.pipeline(name=name, description="Next week's stops: service times and promised arrival windows")
    return described(with_defaults(servicetime_plan, defaults or {}))


servicetime_plan = make_plan_pipeline()

"""The DAG: ingest -> validate -> features -> tune (tune_trials > 0) -> train -> evaluate
-> if blessed: register -> deploy.

An exit handler records the run's outcome whatever happens; steps that touch
the network retry with backoff; caching is off because the inputs are URIs
whose contents change between runs. ``make_pipeline`` takes a hook applied to
every task, which is how the cluster build adds its environment and Secrets.
The parameters, their defaults and descriptions are ``pipelines.parameters``'s table.
"""


import inspect
from typing import Callable

from kfp import dsl

from pipelines import ops, parameters

JOB_ID = dsl.PIPELINE_JOB_ID_PLACEHOLDER  # names the run's folder when run_uri is one (pipelines/run_uri.py)
# Retries are for a blip of S3 or MLflow: a retried attempt checks the services first and stops at
# once when an earlier attempt failed for good (components.steps.guarded), so an outage or a bad
# file ends the step in seconds per attempt, not minutes.
NETWORK_RETRY = {"num_retries": 2, "backoff_duration": "2s", "backoff_factor": 2.0, "backoff_max_duration": "10s"}
DESCRIPTION = "Delivery service-time model: data to deployed champion"
TaskHook = Callable[[dsl.PipelineTask], None]


def with_defaults(fn: Callable, defaults: dict) -> Callable:
    """``fn`` with other parameter defaults: what a dashboard user sees pre-filled on *Create run*."""
    params = list(inspect.signature(fn).parameters.values())
    unknown = set(defaults) - {p.name for p in params}
    if unknown:
        raise ValueError(f"no pipeline parameter {sorted(unknown)}")
    fn.__defaults__ = tuple(defaults.get(p.name, p.default) for p in params)
    return fn


def make_pipeline(hook: TaskHook | None = None, name: str = "servicetime", defaults: dict | None = None):
    """The pipeline; ``defaults`` pre-fill *Create run* (on top of ``parameters.defaults()``)."""
    d = parameters.defaults(defaults)

    def task(t: dsl.PipelineTask, retry: bool = False) -> dsl.PipelineTask:
        t.set_caching_options(False)
        if retry:
            t.set_retry(**NETWORK_RETRY)
        if hook:
            hook(t)
        return t

    def servicetime_pipeline(
        data_root: str = d["data_root"],
        run_uri: str = d["run_uri"],
        config_json: str = d["config_json"],
        last_weeks: int = d["last_weeks"],
        num_workers: int = d["num_workers"],
        epochs: int = d["epochs"],
        tune_trials: int = d["tune_trials"],
        min_improvement: float = d["min_improvement"],
        max_slice_regression: float = d["max_slice_regression"],
        fail_on_rejected: bool = d["fail_on_rejected"],
        simulate_if_empty: bool = d["simulate_if_empty"],
    ):
        exit_task = task(ops.summary_op(run_uri=run_uri, job_id=JOB_ID))
        with dsl.ExitHandler(exit_task, name="record-outcome"):
            ingest = task(
                ops.ingest_op(
                    config_json=config_json,
                    data_root=data_root,
                    last_weeks=last_weeks,
                    simulate_if_empty=simulate_if_empty,
                    run_uri=run_uri,
                    job_id=JOB_ID,
                ),
                retry=True,
            )
            validate = task(ops.validate_op(config_json=config_json, data_root=data_root,
                                            data_version=ingest.outputs["Output"], fail_on_rejected=fail_on_rejected,
                                            run_uri=run_uri, job_id=JOB_ID))
            features = task(ops.features_op(config_json=config_json, run_uri=run_uri, job_id=JOB_ID,
                                            clean=validate.outputs["clean"]))
            # Always a step (it returns at once when tune_trials is 0): KFP cannot pass a
            # conditional step's output to one outside its branch.
            tune = task(ops.tune_op(config_json=config_json, tune_trials=tune_trials, num_workers=num_workers,
                                    epochs=epochs, data_version=validate.outputs["Output"], run_uri=run_uri,
                                    job_id=JOB_ID, features=features.outputs["features"]))
            train = task(ops.train_op(config_json=config_json, num_workers=num_workers, epochs=epochs,
                                      tuned_json=tune.output, data_version=validate.outputs["Output"],
                                      run_uri=run_uri, job_id=JOB_ID, features=features.outputs["features"]),
                         retry=True)
            evaluate = task(ops.evaluate_op(config_json=config_json, min_improvement=min_improvement,
                                            max_slice_regression=max_slice_regression, run_id=train.outputs["run_id"],
                                            run_uri=run_uri, job_id=JOB_ID, features=features.outputs["features"],
                                            model=train.outputs["model"]), retry=True)
            with dsl.If(evaluate.outputs["Output"] == True, name="blessed"):  # noqa: E712 (KFP condition syntax)
                register = task(ops.register_op(config_json=config_json, model_version=train.outputs["model_version"],
                                                run_uri=run_uri, job_id=JOB_ID), retry=True)
                task(ops.deploy_op(config_json=config_json, run_uri=run_uri, job_id=JOB_ID,
                                   features=features.outputs["features"], metrics=evaluate.outputs["metrics"]),
                     retry=True).after(register)

    servicetime_pipeline.__doc__ = parameters.docstring(DESCRIPTION)
    return dsl.pipeline(name=name, description=DESCRIPTION)(servicetime_pipeline)


servicetime_pipeline = make_pipeline()

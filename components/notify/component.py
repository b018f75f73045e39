"""The notify KFP component: the exit task of the lifecycle's dsl.ExitHandler."""
from kfp import dsl

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("notify"), install_kfp_package=False)
def notify(status: dsl.PipelineTaskFinalStatus, notify_url: str, registry_uri: str, model_name: str,
           run_created: str) -> str:
    """Posts the run's outcome (state, the failing step and its error, or the pushed model and its
    metric) to `notify_url`, else to the URL in $KFX_NOTIFY_URL (a Secret's, on a cluster); does
    nothing without either. Returns the text posted."""
    # dsl.component embeds this body's source in the IR: imports must live here.
    import os

    from kfx_components.notify import executor
    posted = executor.run(url=notify_url or os.environ.get(executor.URL_ENV, ""), state=status.state,
                          run_name=status.pipeline_job_resource_name, error_message=status.error_message or "",
                          registry_uri=registry_uri, model_name=model_name, run_created=run_created)
    if posted:
        print(posted["text"])
    return posted.get("text", "")

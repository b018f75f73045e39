"""The kfx lifecycle for any tabular data set with a label, as a KFP pipeline.

resolve (the baseline) -> ingest -> validate -> transform -> tune ->
distributed-train -> distill -> quantize -> evaluate -> infra-validate -> push. What the data set is (file, label, problem
type, slicing feature, column roles) arrives as pipeline parameters; where
each step runs (CPU/GPU/TPU pools, resources) comes from a compile profile.
"""
from typing import List, Optional

from kfp import dsl
from kfp.dsl import Dataset

from kfx_components.deploy.component import deploy
from kfx_components.distill.component import distill
from kfx_components.distributed_train.component import distributed_train
from kfx_components.evaluate.component import evaluate
from kfx_components.infra_validate.component import infra_validate
from kfx_components.ingest.component import ingest
from kfx_components.notify.component import notify
from kfx_components.push.component import push
from kfx_components.quantize.component import quantize
from kfx_components.resolve.component import resolve
from kfx_components.transform.component import transform
from kfx_components.tune.component import tune
from kfx_components.validate.component import check_drift, validate
from kfx_pipelines import profiles
from kfx_pipelines.profiles import kfx_pipeline, place

PIPELINE_NAME = "kfx-tabular"


def build_pipeline(profile: str = "cpu"):
    """The pipeline function for a compile profile."""

    @kfx_pipeline(PIPELINE_NAME, __doc__, profile)
    def tabular(
        data_uri: str,
        label: str,
        span: int = 0,                 # the data version (kfx run --data PATTERN-WITH-{SPAN}): kept with the run
        # A window of spans (kfx run --train-spans K; docs/monitoring.md): kfx run resolves the pattern
        # into the spans trained on (oldest first) and their files, the newer span held out as the split
        # "backtest" (0 and "": none; temporal_backtest false) and a hash of their contents (a file
        # changed in place is a new input). The imported data_uri stays the newest span's file.
        train_spans: int = 0,
        temporal_backtest: bool = True,
        spans: List[int] = [],
        span_uris: List[str] = [],
        backtest_span: int = 0,
        backtest_uri: str = "",
        span_fingerprint: str = "",
        problem_type: str = "binary",
        model_name: str = "model",
        registry_uri: str = "",
        schema_uri: str = "",
        eval_ratio: float = 0.15,
        test_ratio: float = 0.2,
        split_key: str = "",
        drop_columns: List[str] = [],
        categorical_features: List[str] = [],
        bucketize_features: List[str] = [],
        num_buckets: int = 10,
        stop_on_anomalies: bool = True,
        drift_action: str = "block",
        beam_pipeline_args: List[str] = profiles.beam_pipeline_args(profile),   # DirectRunner, or Flink
        tuner: str = "hyperband",
        model_family: str = "auto",    # or "network" / "gradient_boosted_trees": tune chooses on eval with auto
        max_trials: int = 6,
        tune_epochs: int = 20,
        train_epochs: int = 100,
        train_workers: int = 1,
        temperature: float = 4.0,
        alpha: float = 0.3,
        student_width: int = 16,
        student_embedding_dim: int = 2,
        max_student_ratio: float = 0.25,
        distill_epochs: int = 100,
        distill_tolerance: float = 0.02,
        quantize_tolerance: float = 0.02,
        pruning_sparsity: float = 0.5,
        quantize_qat: bool = True,
        finetune_epochs: int = 2,
        finetune_when: str = "int8_rejected",  # "always": fine-tune pruned/QAT even when int8 passes the gate
        slice_features: List[str] = [],
        crossed_slices: List[str] = [],
        max_fairness_gap: float = 0.0,
        explain_rows: int = 200,
        metric_threshold: float = 0.0,
        baseline_tolerance: float = 0.01,
        min_vs_reference: float = 0.85,
        bless_on: str = "random",      # "temporal": the backtest on the newest span must pass too
        rollout: str = "none",
        notify_url: str = "",          # a webhook (Slack-compatible) for the run's outcome; on a cluster a Secret's
    ):
        # Whatever happens below, the exit task posts the run's outcome (nothing without a URL).
        outcome = place(notify(notify_url=notify_url, registry_uri=registry_uri, model_name=model_name,
                               run_created=dsl.PIPELINE_JOB_CREATE_TIME_UTC_PLACEHOLDER), "notify", profile)
        with dsl.ExitHandler(outcome, name="lifecycle"):
            # The model in production and the statistics it was trained on: what this run is judged against.
            baseline = place(resolve(registry_uri=registry_uri, model_name=model_name), "resolve", profile)

            data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
            data.set_display_name("import-data")

            examples = place(ingest(
                data=data.output, label=label, problem_type=problem_type, eval_ratio=eval_ratio,
                test_ratio=test_ratio, drop_columns=drop_columns, split_key=split_key,
                beam_pipeline_args=beam_pipeline_args, span_uris=span_uris, spans=spans,
                backtest_uri=backtest_uri, backtest_span=backtest_span, span_fingerprint=span_fingerprint),
                "ingest", profile)

            validated = place(validate(
                examples=examples.outputs["examples"], curated_schema_uri=schema_uri,
                stop_on_anomalies=stop_on_anomalies, beam_pipeline_args=beam_pipeline_args), "validate", profile)
            # A step of its own: a new baseline re-runs this check, not everything downstream of the schema.
            drift = place(check_drift(
                statistics=validated.outputs["statistics"], schema=validated.outputs["schema"],
                baseline_statistics_uri=baseline.outputs["statistics_uri"], drift_action=drift_action),
                "validate", profile)

            # After the drift check: drift that blocks stops the run before any training.
            transformed = place(transform(
                examples=examples.outputs["examples"], schema=validated.outputs["schema"],
                categorical_features=categorical_features, bucketize_features=bucketize_features,
                num_buckets=num_buckets, beam_pipeline_args=beam_pipeline_args), "transform", profile).after(drift)
            features = dict(transformed_examples=transformed.outputs["transformed_examples"],
                            transform_graph=transformed.outputs["transform_graph"])

            tuned = place(tune(algorithm=tuner, max_trials=max_trials, epochs=tune_epochs, model_family=model_family,
                               **features),
                          "tune", profile)

            teacher = place(distributed_train(
                hyperparameters=tuned.outputs["hyperparameters"], epochs=train_epochs, workers=train_workers,
                **features),
                "distributed_train", profile)

            # The student, or the teacher when the student falls short of it (distill's gate); a forest
            # teacher is passed on and its student is the edge variant quantize converts.
            distilled = place(distill(
                teacher=teacher.outputs["model"], temperature=temperature, alpha=alpha,
                student_width=student_width, student_embedding_dim=student_embedding_dim,
                max_student_ratio=max_student_ratio, epochs=distill_epochs, tolerance=distill_tolerance, **features),
                "distill", profile)
            model = distilled.outputs["model"]

            quantized = place(quantize(
                model=distilled.outputs["edge_model"], stands_in_for=model, tolerance=quantize_tolerance, examples=examples.outputs["examples"],
                pruning_sparsity=pruning_sparsity, qat=quantize_qat, finetune_epochs=finetune_epochs,
                finetune_when=finetune_when, **features),
                "quantize", profile)

            evaluated = place(evaluate(
                model=model, examples=examples.outputs["examples"],
                slice_features=slice_features, crossed_slices=crossed_slices, max_fairness_gap=max_fairness_gap,
                explain_rows=explain_rows, metric_threshold=metric_threshold,
                baseline_tolerance=baseline_tolerance, min_vs_reference=min_vs_reference,
                baseline_model_uri=baseline.outputs["model_uri"], beam_pipeline_args=beam_pipeline_args,
                bless_on=bless_on),
                "evaluate", profile)

            # The blessed candidate loaded and queried in the serving runtime (skipped when not blessed).
            served = place(infra_validate(
                model=model, examples=examples.outputs["examples"], blessing=evaluated.outputs["blessing"]),
                "infra_validate", profile)

            pushed = place(push(
                model=model, quantized=quantized.outputs["quantized"],
                blessing=evaluated.outputs["blessing"], infra_blessing=served.outputs["infra_blessing"],
                eval_metrics=evaluated.outputs["metrics"],
                examples=examples.outputs["examples"], hyperparameters=tuned.outputs["hyperparameters"],
                statistics=validated.outputs["statistics"], schema=validated.outputs["schema"],
                registry_uri=registry_uri, model_name=model_name), "push", profile)

            # Only a pushed (blessed) model is deployed; locally this records the rollout to run.
            with dsl.If(pushed.outputs["pushed"] == True, name="model-pushed"):  # noqa: E712 - a KFP condition
                place(deploy(pushed_model=pushed.outputs["pushed_model"], registry_uri=registry_uri,
                             model_name=model_name, rollout=rollout), "deploy", profile)

    return tabular


def compile_pipeline(output_path: str, profile: str = "cpu", defaults: Optional[dict] = None) -> str:
    """Compiles the pipeline to KFP IR YAML; `defaults` become parameter defaults in the IR."""
    from kfp import compiler
    compiler.Compiler().compile(build_pipeline(profile), output_path,
                                pipeline_parameters=defaults or None)
    return output_path

"""TFX's Chicago taxi pipeline (native Keras, LocalDagRunner), written after TFX's public taxi
template for bench/tfx_compare.py. Runs in the TFX venv (make bench-tfx-venv), not in .venv.

    build/venv-tfx/bin/python bench/tfx_taxi/pipeline.py --data-dir DIR --root DIR [--timings FILE]

DIR holds the CSV file(s) CsvExampleGen reads. After the run, the wall time of every node, read
from the pipeline's ml-metadata store (each execution's creation and last update), is written
as JSON to --timings: {"steps": {node id: [start, end]}, "state": {node id: state}}.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from tfx import v1 as tfx
import tensorflow_model_analysis as tfma

NAME = "chicago_taxi_native_keras"
MODULE = str(Path(__file__).resolve().parent / "user_module" / "taxi_utils.py")


def eval_config() -> tfma.EvalConfig:
    """Overall and per trip_start_hour; blessed at binary accuracy >= 0.6 and no worse than the
    last blessed model (the change threshold is ignored on a first run)."""
    accuracy = tfma.MetricConfig(
        class_name="BinaryAccuracy",
        threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.6}),
            change_threshold=tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                                         absolute={"value": -1e-10})))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key="tips_xf",
                                    preprocessing_function_names=["transform_features"])],
        metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="ExampleCount"), accuracy])],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=["trip_start_hour"])])


def create_pipeline(data_dir: str, root: str, train_steps: int, eval_steps: int) -> tfx.dsl.Pipeline:
    example_gen = tfx.components.CsvExampleGen(input_base=data_dir)
    statistics = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema = tfx.components.SchemaGen(statistics=statistics.outputs["statistics"], infer_feature_shape=False)
    validator = tfx.components.ExampleValidator(statistics=statistics.outputs["statistics"],
                                                schema=schema.outputs["schema"])
    transform = tfx.components.Transform(examples=example_gen.outputs["examples"], schema=schema.outputs["schema"],
                                         module_file=MODULE)
    trainer = tfx.components.Trainer(module_file=MODULE, examples=transform.outputs["transformed_examples"],
                                     transform_graph=transform.outputs["transform_graph"],
                                     schema=schema.outputs["schema"],
                                     train_args=tfx.proto.TrainArgs(num_steps=train_steps),
                                     eval_args=tfx.proto.EvalArgs(num_steps=eval_steps))
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(examples=example_gen.outputs["examples"], model=trainer.outputs["model"],
                                         baseline_model=baseline.outputs["model"], eval_config=eval_config())
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=os.path.join(root, "serving_model"))))
    return tfx.dsl.Pipeline(
        pipeline_name=NAME, pipeline_root=os.path.join(root, "pipelines"),
        components=[example_gen, statistics, schema, validator, transform, trainer, baseline, evaluator, pusher],
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(root, "metadata.db")),
        beam_pipeline_args=["--direct_running_mode=multi_processing", "--direct_num_workers=0"])


def node_timings(metadata_path: str) -> dict:
    """{"steps": {node id: [start s, end s]}, "state": {...}} of the newest run in the store."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    store = metadata_store.MetadataStore(config)
    runs = store.get_contexts_by_type("pipeline_run")
    newest = max(runs, key=lambda c: c.create_time_since_epoch)
    nodes = {c.id: c.name.split(".")[-1] for c in store.get_contexts_by_type("node")}
    steps, state = {}, {}
    for execution in store.get_executions_by_context(newest.id):
        node = next((nodes[c.id] for c in store.get_contexts_by_execution(execution.id) if c.id in nodes), None)
        if node is None:
            continue
        steps[node] = [execution.create_time_since_epoch / 1000, execution.last_update_time_since_epoch / 1000]
        state[node] = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
    return {"steps": steps, "state": state}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--timings", help="where to write the per-node timings (JSON)")
    p.add_argument("--train-steps", type=int, default=1000)
    p.add_argument("--eval-steps", type=int, default=150)
    args = p.parse_args(argv)
    tfx.orchestration.LocalDagRunner().run(
        create_pipeline(args.data_dir, args.root, args.train_steps, args.eval_steps))
    if args.timings:
        Path(args.timings).write_text(json.dumps(node_timings(os.path.join(args.root, "metadata.db"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

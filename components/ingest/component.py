"""The ingest KFP component: a CSV/Parquet Dataset -> examples (train/eval/test TFRecords)."""
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("ingest"), install_kfp_package=False)
def ingest(data: Input[Dataset], label: str, problem_type: str, eval_ratio: float, test_ratio: float,
           drop_columns: List[str], split_key: str, examples: Output[Dataset], engine: str = "auto",
           beam_pipeline_args: List[str] = [], span_uris: List[str] = [], spans: List[int] = [],
           backtest_uri: str = "", backtest_span: int = 0, span_fingerprint: str = ""):
    """Convert a table to train/eval/test GZIP TFRecords of tf.train.Example.

    eval_ratio of the rows tune the model (search, early stopping, distillation);
    test_ratio of them, which nothing trains on, judge it.
    engine: "auto" (Beam for tables of 64 MiB and more), "pandas" or "beam"; the Beam
    engine runs with beam_pipeline_args, as validate and transform do (docs/scale.md).
    A window of spans (kfx run --train-spans): span_uris, the files of `spans`, are split
    instead of `data`; backtest_uri, span backtest_span's file, becomes the split "backtest".
    span_fingerprint (their contents' hash) is not read: it makes a changed file a new input.
    """
    # dsl.component embeds this body's source in the IR: imports must live here.
    import tempfile

    from kfx_formats import s3
    from kfx_components.common import component_io
    from kfx_components.ingest import executor
    # Only what differs from the defaults is passed on, so an image built before the
    # engine existed still runs this body.
    extra = {}
    if engine != "auto":
        extra["engine"] = engine
    if beam_pipeline_args:
        extra["beam_pipeline_args"] = list(beam_pipeline_args)
    with tempfile.TemporaryDirectory() as scratch:
        def local(uri: str) -> str:   # the imported file is at hand already; other spans are fetched
            return data.path if uri == data.uri else s3.local_copy(uri, scratch)
        if span_uris:
            extra.update(span_paths=[local(u) for u in span_uris], spans=list(spans))
        if backtest_uri:
            extra.update(backtest_path=local(backtest_uri), backtest_span=backtest_span)
        facts = executor.run(data_path=data.path, examples_dir=examples.path, label=label,
                             problem_type=problem_type, eval_ratio=eval_ratio, test_ratio=test_ratio,
                             drop_columns=list(drop_columns or ()), split_key=split_key, **extra)
    component_io.put(examples, facts)   # with `summary` when ingest left something out of the file

"""The ingest KFP component: a CSV/Parquet Dataset -> examples (train/eval/test TFRecords)."""
from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kfx_components.images import stage_image


@dsl.component(base_image=stage_image("ingest"), install_kfp_package=False)
def ingest(data: Input[Dataset], label: str, problem_type: str, eval_ratio: float, test_ratio: float,
           drop_columns: List[str], split_key: str, examples: Output[Dataset]):
    """Convert a table to train/eval/test GZIP TFRecords of tf.train.Example.

    eval_ratio of the rows tune the model (search, early stopping, distillation);
    test_ratio of them, which nothing trains on, judge it.
    """
    # dsl.component embeds this body's source in the IR: imports must live here.
    from kfx_components.ingest import executor
    facts = executor.run(data_path=data.path, examples_dir=examples.path, label=label,
                         problem_type=problem_type, eval_ratio=eval_ratio, test_ratio=test_ratio,
                         drop_columns=list(drop_columns or ()), split_key=split_key)
    examples.metadata.update(facts)

"""kfx pipelines: the lifecycle (tabular.py) and the monitor (monitor.py) as KFP DSL, their compile
profiles, the data sets' configurations (configs/) and curated schemas (schemas/)."""

"""Reading compiled KFP IR (PipelineSpec YAML) into what the runner needs.

A pipeline is a tree of DAGs: the root DAG's tasks are containers, importers or sub-DAGs
(dsl.If / Elif / Else branches, dsl.ParallelFor bodies, pipelines used as components), each
sub-DAG a DAG of its own. Exit handlers (`dsl.ExitHandler`) are not run locally.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Optional

import yaml

_PARAM_TYPES = {
    "STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": bool, "LIST": list, "STRUCT": dict,
}


class IRError(ValueError):
    """The IR, or a value given for it, cannot be run."""


# KFP's Go backend reads backoffs as Go durations; the SDK writes "<n>s" (and accepts m, h).
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}
# The SDK's defaults for set_retry (kfp/dsl/pipeline_task.py): 0s backoff, factor 2, at most 1h.
DEFAULT_BACKOFF = (0.0, 2.0, 3600.0)


def seconds(duration) -> float:
    """A retry policy's duration ("30s", "10m", 1.5) in seconds; IRError when it is none."""
    if isinstance(duration, (int, float)):
        return float(duration)
    match = _DURATION.match(str(duration))
    if not match:
        raise IRError(f"cannot read duration {duration!r} (expected e.g. 30s, 10m)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


@dataclasses.dataclass(frozen=True)
class Retry:
    """`task.set_retry(...)`: attempts after the first, and the wait before attempt n (1-based):
    min(backoff * factor ** (n - 1), max_backoff), as KFP's backend (Argo's retryStrategy) waits."""
    retries: int
    backoff: float
    factor: float
    max_backoff: float

    def wait(self, attempt: int) -> float:
        return min(self.backoff * self.factor ** (attempt - 1), self.max_backoff)


# Placeholder structures the local runner does not expand: a container component's command
# with them would get their JSON text as arguments.
_UNSUPPORTED_ARGS = {'{"Concat"': "dsl.ConcatPlaceholder", '{"IfPresent"': "dsl.IfPresentPlaceholder"}


def coerce(kind: str, value):
    """A parameter value as its declared IR type: the IR stores every number as a float, and
    JSON/YAML may give ints for doubles. (On a cluster, Go's protojson writes 1.0 as 1.)"""
    if kind in ("NUMBER_INTEGER", "NUMBER_DOUBLE") and isinstance(value, str):
        try:   # YAML reads 1e-3 and 1_000 as text; people write numbers so
            number = float(value)
        except ValueError:
            number = float("nan")
        value = number if number - number == 0 else value   # not finite: stays text, refused below
    if kind == "BOOLEAN" and type(value) is int and value in (0, 1):
        return bool(value)   # --param fail=1
    if kind == "NUMBER_INTEGER" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "NUMBER_DOUBLE" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "STRING" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)   # --param model_name=2024 reads as a number: the pipeline wants its text
    return value


def check_values(parameters: dict, given: dict, pipeline: str = "the pipeline") -> dict:
    """`given` values coerced to the declared types of `parameters` (the IR's root input
    definitions); an unknown name or a wrong type is an IRError naming it."""
    unknown = sorted(set(given) - set(parameters))
    if unknown:
        raise IRError(f"unknown pipeline parameter(s) {unknown}; {pipeline} takes {sorted(parameters)}")
    values = {}
    for name, value in given.items():
        kind = parameters[name]["parameterType"]
        expected = _PARAM_TYPES.get(kind, object)
        value = coerce(kind, value)
        if not isinstance(value, expected) or (expected in (int, (int, float)) and isinstance(value, bool)):
            raise IRError(f"pipeline parameter '{name}' must be {kind}, got {value!r}")
        if isinstance(value, float) and value - value != 0:   # YAML's .nan and .inf: no setting means them
            raise IRError(f"pipeline parameter '{name}' must be a finite number, got {value!r}")
        values[name] = value
    return values


@dataclasses.dataclass
class Task:
    name: str                        # the task's name in its DAG
    spec: dict                       # the task entry in <dag>.tasks
    component: dict                  # components[<ref>]
    executor: dict                   # deploymentSpec.executors[<label>]; {} for a sub-DAG
    platform: dict                   # kubernetes platform config for the task, if any
    label: str = ""                  # its name in progress, MLMD and the summary (see load)
    dag: Optional["Dag"] = None      # a sub-DAG task's own DAG

    @property
    def is_importer(self) -> bool:
        return "importer" in self.executor

    @property
    def container(self) -> dict:
        return self.executor.get("container", {})

    @property
    def condition(self) -> str:
        """dsl.If / Elif / Else: the CEL condition over the task's input parameters, or ""."""
        return self.spec.get("triggerPolicy", {}).get("condition", "")

    @property
    def iterator(self) -> Optional[dict]:
        """dsl.ParallelFor: the task's parameterIterator or artifactIterator, or None."""
        return self.spec.get("parameterIterator") or self.spec.get("artifactIterator")

    @property
    def runs_after_failure(self) -> bool:
        """An exit task of dsl.ExitHandler, or `ignore_upstream_failure()`: it runs once its
        upstream tasks have ended, whether they succeeded, failed or never ran."""
        return self.spec.get("triggerPolicy", {}).get("strategy") == "ALL_UPSTREAM_TASKS_COMPLETED"

    @property
    def retry(self) -> Optional[Retry]:
        policy = self.spec.get("retryPolicy")
        if not policy or not policy.get("maxRetryCount"):
            return None
        backoff, factor, most = DEFAULT_BACKOFF
        return Retry(int(policy["maxRetryCount"]), seconds(policy.get("backoffDuration", backoff)),
                     float(policy.get("backoffFactor", factor)),
                     seconds(policy.get("backoffMaxDuration", most)))

    @property
    def timeout(self) -> Optional[float]:
        """Seconds the step may run (`kubernetes.set_timeout`: the pod's activeDeadlineSeconds)."""
        value = self.platform.get("activeDeadlineSeconds")
        return float(value) if value else None

    @property
    def upstream(self) -> set[str]:
        deps = set(self.spec.get("dependentTasks", []))
        for kind in ("parameters", "artifacts"):
            for binding in self.spec.get("inputs", {}).get(kind, {}).values():
                for key in ("taskOutputParameter", "taskOutputArtifact", "taskFinalStatus"):
                    if key in binding:
                        deps.add(binding[key]["producerTask"])
        return deps

    @property
    def caching(self) -> bool:
        """As KFP's driver reads the IR: cached only with `enableCache: true`. The compiler writes
        that for the default (caching on); `set_caching_options(False)` compiles to
        `cachingOptions: {}` (proto3 leaves out a false field), which is off."""
        return bool(self.spec.get("cachingOptions", {}).get("enableCache", False))

    def output_artifacts(self) -> dict[str, str]:
        """Output name -> schema title."""
        outs = self.component.get("outputDefinitions", {}).get("artifacts", {})
        return {k: v["artifactType"]["schemaTitle"] for k, v in outs.items()}

    def output_parameters(self) -> list[str]:
        return list(self.component.get("outputDefinitions", {}).get("parameters", {}))

    def output_parameter_types(self) -> dict[str, str]:
        outs = self.component.get("outputDefinitions", {}).get("parameters", {})
        return {k: v["parameterType"] for k, v in outs.items()}

    def input_parameter_types(self) -> dict[str, str]:
        ins = self.component.get("inputDefinitions", {}).get("parameters", {})
        return {k: v["parameterType"] for k, v in ins.items()}

    def input_artifact_types(self) -> dict[str, str]:
        ins = self.component.get("inputDefinitions", {}).get("artifacts", {})
        return {k: v["artifactType"]["schemaTitle"] for k, v in ins.items()}

    def definition_digest(self) -> str:
        """What the step *is*: interface and container (image, command, args), for the cache key."""
        body = {"component": self.component, "executor": self.executor}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass
class Dag:
    tasks: dict[str, Task]
    order: list[str]                 # a topological order of the tasks
    outputs: dict                    # <component>.dag.outputs: which subtask outputs it passes on

    def leaves(self) -> list[Task]:
        """Its container and importer tasks, those of its sub-DAGs included, in dependency order."""
        return [leaf for n in self.order for leaf in
                (self.tasks[n].dag.leaves() if self.tasks[n].dag else [self.tasks[n]])]


@dataclasses.dataclass
class Pipeline:
    name: str
    spec: dict
    root: Dag
    parameters: dict                 # root.inputDefinitions.parameters

    @property
    def tasks(self) -> dict[str, Task]:
        """Every container and importer task of the pipeline, by label, in dependency order."""
        return {t.label: t for t in self.root.leaves()}

    @property
    def order(self) -> list[str]:
        return list(self.tasks)

    def resolve_parameters(self, given: dict) -> dict:
        """Pipeline parameter values: defaults, overridden by `given`, type-checked."""
        values = {}
        for name, definition in self.parameters.items():
            if name in given:
                continue
            if "defaultValue" in definition:
                values[name] = coerce(definition["parameterType"], definition["defaultValue"])
            elif not definition.get("isOptional"):
                raise IRError(f"pipeline parameter '{name}' is required and has no default")
        return {**values, **check_values(self.parameters, given, "this pipeline")}


def read_spec(path: str | Path) -> tuple[dict, dict]:
    """(pipeline spec, Kubernetes platform spec) of a compiled pipeline file; IRError if it is none."""
    path = Path(path)
    if not path.is_file():
        raise IRError(f"pipeline IR {path} does not exist (compile it with `kfx compile`)")
    try:
        # The C loader when PyYAML has it: ~10x faster on the lifecycle's IR (bench/runner_overhead.py).
        docs = [d for d in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]
    except (OSError, yaml.YAMLError) as err:
        raise IRError(f"{path}: cannot read pipeline IR: {err}") from err
    if not docs or not isinstance(docs[0], dict) or "root" not in docs[0] or "pipelineInfo" not in docs[0]:
        raise IRError(f"{path}: not a compiled KFP pipeline (no pipelineInfo/root)")
    platform = docs[1].get("platforms", {}).get("kubernetes", {}) if len(docs) > 1 else {}
    return docs[0], platform


def root_parameters(spec: dict) -> dict:
    """The pipeline's own parameters: name -> input definition (parameterType, defaultValue...)."""
    return spec["root"].get("inputDefinitions", {}).get("parameters", {})


def string_parameters(parameters: dict) -> set:
    """The names of the STRING ones among `parameters` (root_parameters): their --param text is
    taken verbatim, as the KFP UI and API pass it."""
    return {name for name, d in parameters.items() if d.get("parameterType") == "STRING"}


def _read_dag(path: Path, spec: dict, dag_spec: dict, platform_executors: dict, where: tuple) -> Dag:
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    tasks = {}
    for name, task_spec in dag_spec.get("tasks", {}).items():
        component = spec["components"][task_spec["componentRef"]["name"]]
        strategy = task_spec.get("triggerPolicy", {}).get("strategy", "ALL_UPSTREAM_TASKS_SUCCEEDED")
        if strategy not in ("ALL_UPSTREAM_TASKS_SUCCEEDED", "ALL_UPSTREAM_TASKS_COMPLETED"):
            raise IRError(f"{path}: task '{name}' has trigger strategy {strategy}, which the local runner "
                          "does not run")
        if "dag" in component:
            sub = _read_dag(path, spec, component["dag"], platform_executors, where + (name,))
            tasks[name] = Task(name, task_spec, component, {}, {}, "/".join(where + (name,)), sub)
            continue
        label = component["executorLabel"]
        for arg in executors[label].get("container", {}).get("command", []) + \
                executors[label].get("container", {}).get("args", []):
            feature = next((f for prefix, f in _UNSUPPORTED_ARGS.items() if str(arg).startswith(prefix)), None)
            if feature:
                raise IRError(f"{path}: task '{name}' uses {feature} in its command, which the local runner "
                              "does not expand")
        tasks[name] = Task(name, task_spec, component, executors[label], platform_executors.get(label, {}),
                           "/".join(where + (name,)))
    try:
        order = list(TopologicalSorter({n: t.upstream for n, t in tasks.items()}).static_order())
    except CycleError as err:
        raise IRError(f"{path}: the task graph has a cycle: {err.args[1]}") from err
    return Dag(tasks, order, dag_spec.get("outputs", {}))


def load(path: str | Path) -> Pipeline:
    """The pipeline's tree of DAGs. A container or importer task's label is its own name, or its
    path of sub-DAG task names ("inner/make") where a pipeline used as a component repeats a name."""
    path = Path(path)
    spec, platform = read_spec(path)
    platform_executors = platform.get("deploymentSpec", {}).get("executors", {})
    root = _read_dag(path, spec, spec["root"]["dag"], platform_executors, ())
    leaves = root.leaves()
    repeated = {n for n in (t.name for t in leaves) if sum(t.name == n for t in leaves) > 1}
    for leaf in leaves:
        if leaf.name not in repeated:
            leaf.label = leaf.name
    return Pipeline(spec["pipelineInfo"]["name"], spec, root, root_parameters(spec))


def artifact_type(schema_title: str) -> dict:
    return {"schemaTitle": schema_title, "schemaVersion": "0.0.1"}


def resources(task: Task) -> tuple[Optional[float], Optional[str]]:
    """(cpu limit in cores, memory limit as given) from the task's container resources."""
    res = task.container.get("resources", {})
    cpu = res.get("resourceCpuLimit") or res.get("cpuLimit")
    if isinstance(cpu, str):
        cpu = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    mem = res.get("resourceMemoryLimit") or (f"{res['memoryLimit']}G" if "memoryLimit" in res else None)
    return cpu, mem

"""The local runner: executes compiled KFP IR on this machine, split as kfp.local splits it (see orchestrator)."""

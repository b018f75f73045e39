"""The artifact metadata keys the runner and the stages agree on (neither imports the other).

The runner adds FINGERPRINT to every input artifact's metadata in the executor input: the
lineage fingerprint of its content, which push records so that the same model is not published
twice. A stage says what a run ends with on its outputs (kfx.runner.outcome reads them; no stage
is known by name): SUMMARY, one line; PUBLISHED, the artifact is outside the run's store (a
registry version); WARNINGS, one-line texts a person must read; ALERT, something a person must act
on, with DETAILS, the lines that say why.
"""
FINGERPRINT = "kfx_fingerprint"
SUMMARY = "summary"
PUBLISHED = "published"
WARNINGS = "warnings"
ALERT = "alert"
DETAILS = "details"

"""monitor: logged serving data against a pushed model's training statistics and schema (TFDV)."""

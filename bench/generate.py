"""Grow the bundled taxi sample (data/chicago_taxi/data.csv, 15k rows) to any number of rows.

Rows are resampled with replacement and their continuous columns jittered (fare,
tips, trip_miles, trip_seconds, coordinates, timestamp), from a fixed seed: the
same arguments always give the same file, byte for byte. Missing cells stay
missing; categorical columns (areas, tracts, hour/day/month, payment type,
company) keep the sample's values, so the label's class balance and the schema
are the sample's. Written chunk by chunk: memory does not grow with the row count.

    .venv/bin/python bench/generate.py --rows 1000000 --out /tmp/taxi_1m.csv
    .venv/bin/python bench/generate.py --rows 1000000 --out /tmp/taxi_1m.parquet
"""
import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "chicago_taxi" / "data.csv"
CHUNK = 100_000
# column -> (kind, scale): relative noise for money/distance/duration, absolute for coordinates.
JITTER = {
    "fare": ("rel", 0.05, 2), "tips": ("rel", 0.05, 2), "trip_miles": ("rel", 0.05, 2),
    "trip_seconds": ("rel", 0.05, 0), "trip_start_timestamp": ("abs", 3600.0, 0),
    "pickup_latitude": ("abs", 0.002, 6), "pickup_longitude": ("abs", 0.002, 6),
    "dropoff_latitude": ("abs", 0.002, 6), "dropoff_longitude": ("abs", 0.002, 6),
}


def chunks(rows: int, seed: int = 0, sample: Path = SAMPLE, chunk: int = CHUNK):
    """DataFrames of at most `chunk` rows, `rows` in all, deterministic in (rows, seed, chunk)."""
    import numpy as np
    import pandas as pd
    base = pd.read_csv(sample)
    rng = np.random.default_rng(seed)
    done = 0
    while done < rows:
        n = min(chunk, rows - done)
        df = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
        for column, (kind, scale, digits) in JITTER.items():
            if column not in df:
                continue
            values = df[column].astype("float64")
            noise = rng.normal(0.0, scale, n)
            jittered = values * (1.0 + noise) if kind == "rel" else values + noise
            if column != "trip_start_timestamp" and kind == "rel":
                jittered = jittered.clip(lower=0.0)
            jittered = jittered.round(digits)
            if digits == 0:
                jittered = jittered.astype("Int64")   # stays integer text, missing stays missing
            df[column] = jittered.where(values.notna())
        yield df
        done += n


def generate(rows: int, out: str, seed: int = 0, chunk: int = CHUNK) -> str:
    """Write `rows` rows to `out` (.csv or .parquet); returns `out`."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".partial"
    if out.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq
        writer = None
        for df in chunks(rows, seed, chunk=chunk):
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)   # one row group per chunk: the unit a reader streams
        writer.close()
    else:
        with open(tmp, "w", newline="") as f:
            for i, df in enumerate(chunks(rows, seed, chunk=chunk)):
                df.to_csv(f, index=False, header=(i == 0))
    os.replace(tmp, out)
    return out


def ensure(rows: int, directory: str, fmt: str = "csv", seed: int = 0) -> str:
    """The generated file for (rows, fmt, seed) under `directory`, made once."""
    out = os.path.join(directory, f"taxi_{rows}_s{seed}.{fmt}")
    if not os.path.exists(out):
        generate(rows, out, seed)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", required=True, help="a .csv or .parquet path")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    generate(args.rows, args.out, args.seed)
    print(args.out, os.path.getsize(args.out), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()

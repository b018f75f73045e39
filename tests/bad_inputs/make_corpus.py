"""Writes the broken-input corpus next to this file: `python tests/bad_inputs/make_corpus.py`.

The files are checked in; this script says byte for byte what each one holds
(some are not text: latin-1 and UTF-16 bytes, a renamed CSV). Each case, the
label and task it is run with and the message expected are in
tests/test_bad_input.py.
"""
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
GOOD_ROWS = "".join(f"{i},{i % 7 * 1.5},{'yes' if i % 3 else 'no'}\n" for i in range(1, 31))

CORPUS = {
    # nothing at all, and a header with no rows below it
    "empty.csv": b"",
    "header_only.csv": b"a,b,target\n",
    # a European spreadsheet export: semicolons, decimal commas
    "semicolon.csv": b"a;b;target\n1;2,5;yes\n2;3,5;no\n3;4,5;yes\n",
    # well formed, but the label the case asks for is not a column
    "no_target.csv": ("a,b,outcome\n" + GOOD_ROWS).encode(),
    # a latin-1 e-acute (0xe9) in line 4
    "latin1.csv": ("a,city,target\n1,Paris,yes\n2,Lyon,no\n3,Orl\xe9ans,yes\n" + GOOD_ROWS).encode("latin-1"),
    # UTF-16 (Excel's "Unicode text")
    "utf16.csv": ("a,b,target\n" + GOOD_ROWS).encode("utf-16"),
    # line 4 lacks a field; line 3 has one too many
    "ragged_short.csv": b"a,b,target\n1,2,yes\n2,3,no\n3,yes\n4,5,no\n",
    "ragged_long.csv": b"a,b,target\n1,2,yes\n2,3,4,no\n3,4,yes\n",
    # every label is the same class
    "single_class.csv": ("a,b,target\n" + "".join(f"{i},{i * 2},yes\n" for i in range(30))).encode(),
    # the label column is empty in every row
    "label_all_null.csv": ("a,b,target\n" + "".join(f"{i},{i * 2},\n" for i in range(30))).encode(),
    # one 'abc' in the otherwise numeric column b, at line 6
    "text_in_numeric.csv": ("a,b,target\n" + "".join(
        f"{i},{'abc' if i == 4 else i * 2},{'yes' if i % 2 else 'no'}\n" for i in range(30))).encode(),
    # 'a' twice: pandas would rename the second to 'a.1'
    "duplicate_columns.csv": ("a,b,a,target\n" + "".join(
        f"{i},{i * 2},{i * 3},{'yes' if i % 2 else 'no'}\n" for i in range(30))).encode(),
    # far too few rows for three splits
    "three_rows.csv": b"a,b,target\n1,2,yes\n2,3,no\n3,4,yes\n",
    # a CSV renamed .parquet
    "not_parquet.parquet": ("a,b,target\n" + GOOD_ROWS).encode(),
    # plain text named .csv.gz
    "not_gzip.csv.gz": ("a,b,target\n" + GOOD_ROWS).encode(),
    # a good table under an extension ingest does not read
    "table.txt": ("a,b,target\n" + GOOD_ROWS).encode(),
    # a directory with two tables: which one is meant?
    "two_csvs/part1.csv": ("a,b,target\n" + GOOD_ROWS).encode(),
    "two_csvs/part2.csv": ("a,b,target\n" + GOOD_ROWS).encode(),
    # a good table, for cases whose fault is in the label or the parameters
    "good.csv": ("a,b,target\n" + GOOD_ROWS).encode(),
}

if __name__ == "__main__":
    for name, data in CORPUS.items():
        path = HERE / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    print(f"{len(CORPUS)} files in {HERE}")

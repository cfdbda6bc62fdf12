"""Label an exported selection in the terminal.

    alectio export ID -o loop0.csv
    python -m alectio_digits_cnn.label loop0.csv
    alectio labels import ID loop0.csv

Each row of the csv that has neither a label nor a skip is drawn as 8x8
characters (its ``reference`` is the image's position in
``sklearn.datasets.load_digits()``); type its digit, ``s`` to skip it, or
``q`` to stop. The file is written back with what was labelled so far.
``--from-dataset`` fills in scikit-learn's own labels instead, to try the
loop without typing.
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import IO

SHADES = " .:-=+*#%@"
ANSWERS = {"q", "s", ""} | set("0123456789")


def draw(image) -> str:
    """An 8x8 image (values 0..16) as 8 lines of characters, two per pixel."""
    return "\n".join("".join(SHADES[min(int(v) * len(SHADES) // 17, len(SHADES) - 1)] * 2 for v in row) for row in image)


def label_file(path: str, *, from_dataset: bool = False, ask: IO[str] = sys.stdin, out: IO[str] = sys.stdout) -> int:
    """Fill in the file's unlabelled rows; return how many were labelled or skipped."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns, rows = list(reader.fieldnames or []), list(reader)
    if not {"index", "reference", "label"} <= set(columns):
        raise SystemExit(f"{path}: not a file from 'alectio export' (it needs the columns index, reference and label)")
    if "skip" not in columns:
        columns.append("skip")
    done = 0
    todo = [r for r in rows if not r["label"] and r.get("skip", "").lower() not in ("true", "1", "yes")]
    for n, row in enumerate(todo, start=1):
        position = int(row["reference"])
        if from_dataset:
            row["label"] = str(int(digits.target[position]))
            done += 1
            continue
        hint = f" (the model says {row['prediction']})" if row.get("prediction") else ""
        out.write(f"\nrecord {row['index']} ({n} of {len(todo)}){hint}:\n{draw(digits.images[position])}\n")
        while True:
            out.write("digit 0-9, s to skip, q to stop: ")
            out.flush()
            answer = ask.readline().strip().lower()
            if answer in ANSWERS:
                break
        if answer in ("q", ""):  # an empty answer: the input ended
            break
        if answer == "s":
            row["skip"] = "true"
        else:
            row["label"] = answer
        done += 1
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    out.write(f"\n{done} of {len(todo)} records labelled or skipped; written to {path}\n")
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alectio_digits_cnn.label", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="a csv written by 'alectio export'")
    parser.add_argument("--from-dataset", action="store_true", help="fill in scikit-learn's own labels instead of asking")
    args = parser.parse_args(argv)
    label_file(args.file, from_dataset=args.from_dataset)


if __name__ == "__main__":
    main()

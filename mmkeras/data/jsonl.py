"""JSON Lines tables (one JSON object per line), read with the line number of every row."""

import json


def read_jsonl(path, text, error):
    """`(column names in first-seen order, [(line, row dict), ...])` of JSONL `text`.

    Blank lines are skipped. `error` (an exception class) is raised with the file and line of
    the first line that is not a JSON object.
    """
    names, rows = [], []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise error(f"{path}, line {line}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise error(f"{path}, line {line}: expected a JSON object, got {type(row).__name__}")
        for key in row:
            if key not in names:
                names.append(key)
        rows.append((line, row))
    return names, rows

"""Fail CI on a skipped test that is not on .ci/allowed_skips.

Reads pytest's ``-rs`` summary ("SKIPPED [N] tests/file.py:LINE: reason") from a log file and
prints every skip with its verdict; exit 1 when one is not allowed (or when the log has no pytest
summary at all)."""

from __future__ import annotations

import re
import sys


def allowed(path: str) -> list[tuple[str, str]]:
    rules = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                file, _, words = line.partition(": ")
                rules.append((file.strip(), words.strip()))
    return rules


def main(log: str, allow_file: str) -> int:
    rules = allowed(allow_file)
    text = open(log, errors="replace").read()
    if not re.search(r"\d+ (passed|failed)", text):
        print(f"check_skips: no pytest summary in {log}")
        return 1
    bad = 0
    for m in re.finditer(r"^SKIPPED \[\d+\] ([^:\s]+):\d+: (.*)$", text, re.M):
        file, reason = m.group(1), m.group(2)
        ok = any(file.endswith(f) and words in reason for f, words in rules)
        bad += not ok
        print(f"{'allowed' if ok else 'NOT ALLOWED'} skip: {file}: {reason}")
    if bad:
        print(f"check_skips: {bad} skip(s) not on {allow_file}: fix the environment or the test, or add the "
              f"skip there with a comment saying why it is acceptable")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

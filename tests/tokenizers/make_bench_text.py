#!/usr/bin/env python3
"""Writes the tokenizer benchmark text: about 4 MB of English prose (the CMake 3.25
reStructuredText manuals) followed by about 4 MB of C++ (the GCC 12 libstdc++ headers),
both as Debian 12 ships them (packages cmake-data and libstdc++-12-dev), files in sorted
order, each part cut at the line end where it reaches 4 MB.

    make_bench_text.py OUT
"""
import pathlib
import sys

LIMIT = 4_000_000
PARTS = [("/usr/share/cmake-3.25/Help", "*.rst"), ("/usr/include/c++/12", "*")]


def part(root, pattern):
    data = bytearray()
    for path in sorted(p for p in pathlib.Path(root).rglob(pattern) if p.is_file()):
        data += path.read_bytes()
        if len(data) >= LIMIT:
            break
    cut = data.rfind(b"\n", 0, LIMIT) + 1
    text = bytes(data[:cut])
    text.decode("utf-8")  # refuse to produce invalid UTF-8
    return text


with open(sys.argv[1], "wb") as out:
    for root, pattern in PARTS:
        out.write(part(root, pattern))

#!/usr/bin/env python3
"""make_trace.py OUT SIZE_MB [FIXTURE_DIR...]

Builds a large PJSIP trace for the replay benchmark by concatenating the fixture traces
again and again, renumbering every Call-ID in each copy (so each copy's calls are new
calls), until OUT is at least SIZE_MB megabytes. Prints the number of calls written."""
import os, re, sys

out_path, size_mb = sys.argv[1], float(sys.argv[2])
dirs = sys.argv[3:] or sorted(
    os.path.join("tests/fixtures/pjsip", d) for d in os.listdir("tests/fixtures/pjsip"))
call_id_line = re.compile(rb"^(?:Call-ID|i):\s*(\S+)", re.M | re.I)
templates = []
for d in dirs:
    path = os.path.join(d, "phone.log")
    if not os.path.exists(path):
        continue
    data = open(path, "rb").read()
    ids = sorted(set(call_id_line.findall(data)), key=len, reverse=True)
    if not ids:
        continue
    pattern = re.compile(b"|".join(re.escape(i) for i in ids))
    expected = os.path.join(d, "expected.ndjson")
    calls = sum(1 for l in open(expected) if '"ringing"' in l) if os.path.exists(expected) else 0
    templates.append((data, pattern, calls))
target = int(size_mb * 1e6)
written = calls = copy = 0
with open(out_path, "wb") as out:
    while written < target:
        for data, pattern, n in templates:
            suffix = b"-%d" % copy
            chunk = pattern.sub(lambda m: m.group(0) + suffix, data)
            out.write(chunk)
            written += len(chunk)
            calls += n
        copy += 1
print(calls)

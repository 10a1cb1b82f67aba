#!/usr/bin/env python3
"""profile_live.py CALLHOOK_BIN [SIZE_MB]

The breakdown of live events, from MicroSIP's append to the webhook received, taken
from a system-call trace (`perf trace record`, which the kernel writes into a ring
buffer as the calls happen, under a microsecond a call here, where strace stops the
process at each one and `perf trace` printing live adds ~40 µs). A real `callhook run`
follows a trace file with one `generic` webhook rule to a receiver in a process of its
own; this script appends a SIP trace built from the fixtures (Call-IDs renumbered, see
make_trace.py) one log entry per write, 2 ms apart, as MicroSIP writes them.

For each webhook the receiver got, the chain is found backwards in the trace: the
receiver's read of the request, callhook's write of it, the source thread's commit
(its writes to the database's log), its read of the trace file, its inotify wake-up,
and the writer's append before that. Prints each step's median and 90th percentile.
PROFILE_KEEP=1 keeps the run's folder (perf's output, the daemon's files and state)."""
import bisect, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

ENTRY = re.compile(rb"^\d{2}:\d{2}:\d{2}\.\d{3} ", re.M)
LINE = re.compile(
    r"^\s*(?P<ts>[\d.]+) \(\s*(?P<dur>[\d.]+) ms\): (?P<comm>.*?)/(?P<tid>\d+) "
    r"(?P<call>\w+)\((?P<args>.*)\)\s+= (?P<ret>-?\d+)")
ENTERED = re.compile(
    r"^\s*(?P<ts>[\d.]+) \(\s*\): (?P<comm>.*?)/(?P<tid>\d+) (?P<call>\w+)\((?P<args>.*)\)\s+\.\.\.")
CONTINUED = re.compile(
    r"^\s*(?P<ts>[\d.]+) \(\s*(?P<dur>[\d.]+) ms\): (?P<comm>.*?)/(?P<tid>\d+)\s+\.\.\. \[continued\]: "
    r"(?P<call>\w+)\(\)\)\s+= (?P<ret>-?\d+)")
SYSCALLS = "read,pread64,write,pwrite64,writev,sendto,recvfrom,fdatasync,fsync,epoll_wait,futex"

RECEIVER = r"""
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def entries(path, size_mb):
    """The log entries of a trace built from the fixtures, each one write."""
    subprocess.run([sys.executable, "benches/make_trace.py", path, str(size_mb),
                    "tests/fixtures/pjsip/basic"],
                   check=True, stdout=subprocess.DEVNULL)
    data = open(path, "rb").read()
    starts = [m.start() for m in ENTRY.finditer(data)] + [len(data)]
    return [data[a:b] for a, b in zip(starts, starts[1:])]


def fds(pid):
    """The process's open files: fd -> what it points at."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return found


def parse(path):
    """perf trace's lines as calls. A call that another event interrupted is printed
    twice: its entry, ending in `...`, then `... [continued]: name()) = ret`."""
    calls = []
    pending = {}
    for line in open(path, errors="replace"):
        m = CONTINUED.match(line)
        if m and int(m["tid"]) in pending:
            entry = pending.pop(int(m["tid"]))
            calls.append(dict(entry, end=entry["start"] + float(m["dur"]), ret=int(m["ret"])))
            continue
        m = LINE.match(line) or ENTERED.match(line)
        if not m:
            continue
        args = dict(kv.split(": ", 1) for kv in m["args"].split(", ") if ": " in kv)
        call = {
            "start": float(m["ts"]), "tid": int(m["tid"]), "call": m["call"],
            "fd": int(args.get("fd", "-1")),
        }
        if m.re is ENTERED:
            pending[call["tid"]] = call
        else:
            calls.append(dict(call, end=call["start"] + float(m["dur"]), ret=int(m["ret"])))
    calls.sort(key=lambda c: c["end"])
    return calls


def last_before(calls, index, test):
    for i in range(index - 1, -1, -1):
        if test(calls[i]):
            return i
    return None


def first_after(calls, index, test):
    for i in range(index + 1, len(calls)):
        if test(calls[i]):
            return i
    return None


def chains(calls, pids, files):
    """One chain per webhook received: the times of each step, in ms."""
    writer, _daemon, receiver = pids
    trace_fd = next(fd for fd, f in files.items() if f.endswith("phone.log"))
    wal_fds = {fd for fd, f in files.items() if f.endswith("-wal")}
    db_fds = wal_fds | {fd for fd, f in files.items() if f.endswith(".db")}
    inotify_fds = {fd for fd, f in files.items() if "inotify" in f}
    # The source's thread: the one that reads the trace file (positional reads, or
    # `read` in older builds).
    reads_trace = lambda d: d["call"] in ("pread64", "read") and d["fd"] == trace_fd
    source = {c["tid"] for c in calls if reads_trace(c) and c["tid"] not in (writer, receiver)}
    result = []
    for i, c in enumerate(calls):
        if not (c["call"] == "recvfrom" and c["ret"] > 0 and c["tid"] == receiver):
            continue
        # The receiver's read of a request; callhook's write of it just before.
        send = last_before(calls, i, lambda d: d["call"] in ("writev", "sendto", "write")
                           and d["ret"] > 100 and d["tid"] not in (writer, receiver)
                           and d["tid"] not in source and d["fd"] not in wal_fds)
        if send is None:
            continue
        wal_end = last_before(calls, send, lambda d: d["tid"] in source and d["fd"] in db_fds
                              and d["call"] in ("pwrite64", "fdatasync", "fsync"))
        if wal_end is None:
            continue
        src = calls[wal_end]["tid"]
        read = last_before(calls, wal_end, lambda d: d["tid"] == src and reads_trace(d) and d["ret"] > 0)
        if read is None:
            continue
        # The commit begins with the source thread's first read or write of the database.
        wal_start = first_after(calls, read, lambda d: d["tid"] == src and d["fd"] in db_fds)
        # Its wake-up: the last read of an inotify watch before (its own watch, or in
        # older builds and where inotify instances ran out, the shared watcher's thread).
        wake = last_before(calls, read, lambda d: d["call"] == "read" and d["fd"] in inotify_fds
                           and d["tid"] not in (writer, receiver))
        if wake is None:
            continue
        append = last_before(calls, wake, lambda d: d["call"] == "write" and d["tid"] == writer
                             and d["ret"] > 0)
        if append is None:
            continue
        # The outbox's thread: its first system call after the commit (a wait that ends,
        # or its read of the job).
        sender = calls[send]["tid"]
        notify = first_after(calls, wal_end, lambda d: d["tid"] == sender)
        result.append({
            "append": calls[append]["end"],
            "wake": calls[wake]["end"],
            "read": calls[read]["end"],
            "commit_start": calls[wal_start]["start"],
            "commit_end": calls[wal_end]["end"],
            "notify": calls[notify]["end"] if notify is not None and notify <= send else calls[wal_end]["end"],
            "send": calls[send]["start"],
            "received": calls[i]["end"],
            "fsyncs": sum(1 for d in calls[wal_start:wal_end + 1]
                          if d["tid"] == src and d["call"] in ("fdatasync", "fsync")),
            "pages": sum(1 for d in calls[wal_start:wal_end + 1]
                         if d["tid"] == src and d["call"] == "pwrite64" and d["ret"] >= 4096),
        })
    return result


def main():
    binary = os.path.abspath(sys.argv[1])
    size_mb = float(sys.argv[2]) if len(sys.argv) > 2 else 0.4
    work = tempfile.mkdtemp(prefix="callhook-profile-")
    items = entries(os.path.join(work, "source.log"), size_mb)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    daemon = None
    try:
        port = int(receiver.stdout.readline())
        trace = os.path.join(work, "phone.log")
        open(trace, "wb").close()
        config = os.path.join(work, "callhook.yaml")
        with open(config, "w") as f:
            f.write(f"version: 1\nstate_dir: state\nsources:\n  - kind: sip_trace\n    path: {trace}\n"
                    f"rules:\n  - name: hook\n    webhook: {{ url: \"http://127.0.0.1:{port}/hook\" }}\n")
        daemon = subprocess.Popen([binary, "run", "-c", config], cwd=work,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        out, files = traced(work, trace, items, (os.getpid(), daemon.pid, receiver.pid))
    finally:
        for process in (daemon, receiver):
            if process is not None:
                process.terminate()
                process.wait()
    calls = parse(out)
    found = chains(calls, (os.getpid(), daemon.pid, receiver.pid), files)
    received = sum(1 for c in calls if c["call"] == "recvfrom" and c["ret"] > 0 and c["tid"] == receiver.pid)
    report(found, len(items), received, calls, (os.getpid(), daemon.pid, receiver.pid), tracing_cost(work))
    if os.environ.get("PROFILE_KEEP"):
        print(f"kept: {work} (perf.txt, fds.txt, the daemon's state)")
    else:
        shutil.rmtree(work, ignore_errors=True)


def traced(work, trace, items, pids):
    """Appends `items` to `trace` under `perf trace` of `pids`; returns perf's output and
    the daemon's open files (fd -> path), read before it stops."""
    data = os.path.join(work, "perf.data")
    out = os.path.join(work, "perf.txt")
    perf = subprocess.Popen(["perf", "trace", "record", "-q", "-o", data, "-p", ",".join(map(str, pids))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    fd = os.open(trace, os.O_WRONLY | os.O_APPEND)
    for item in items:
        os.write(fd, item)
        time.sleep(0.002)
    os.close(fd)
    time.sleep(0.5)
    files = fds(pids[1])
    with open(os.path.join(work, "fds.txt"), "w") as f:
        f.writelines(f"{fd} {target}\n" for fd, target in sorted(files.items()))
    perf.send_signal(signal.SIGINT)
    perf.wait()
    if not os.path.exists(data):
        sys.exit(f"perf trace record failed (exit {perf.returncode}); is perf allowed here?")
    subprocess.run(["perf", "trace", "-i", data, "-e", SYSCALLS, "-o", out], check=True,
                   stderr=subprocess.DEVNULL)
    return out, files


def report(found, appended, received, calls, pids, overhead):
    """Prints each step's p50 and p90 as traced, the daemon's system calls in it, and
    the p50 with the tracing's cost taken off (`overhead` ms a call)."""
    steps = [
        ("append → wake (inotify read)", "append", "wake"),
        ("wake → new bytes read", "wake", "read"),
        ("parse → track → correlate → rules", "read", "commit_start"),
        ("commit (pages read, the log's pages written, fsyncs)", "commit_start", "commit_end"),
        ("commit → the outbox's thread running", "commit_end", "notify"),
        ("outbox: job read, request built, written", "notify", "send"),
        ("request written → read by the receiver", "send", "received"),
        ("append → webhook received, in all", "append", "received"),
    ]
    ends = sorted(c["end"] for c in calls if c["tid"] not in (pids[0], pids[2]))
    print(f"entries appended: {appended}; reads of a request by the receiver: {received}, "
          f"traced back to their append: {len(found)}")
    if not found:
        return
    print(f"per commit: {statistics.median(c['pages'] for c in found):.0f} pages written to the log, "
          f"{statistics.median(c['fsyncs'] for c in found):.0f} fsyncs (medians); "
          f"tracing costs {overhead * 1000:.1f} µs a system call")
    print(f"{'step':56} {'p50 ms':>7} {'p90 ms':>7} {'calls':>6} {'p50 less tracing':>17}")
    for name, a, b in steps:
        spans = sorted(c[b] - c[a] for c in found)
        counts = [bisect.bisect_right(ends, c[b]) - bisect.bisect_right(ends, c[a]) for c in found]
        untraced = [max(0.0, c[b] - c[a] - n * overhead) for c, n in zip(found, counts)]
        p90 = spans[min(len(spans) - 1, int(len(spans) * 0.9))]
        print(f"{name:56} {statistics.median(spans):7.3f} {p90:7.3f} {statistics.median(counts):6.0f} "
              f"{statistics.median(untraced):17.3f}")


def tracing_cost(work):
    """What `perf trace` adds to one system call, in ms: 20,000 small writes, timed
    without and then with this process traced."""
    path = os.path.join(work, "calibrate")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    block = b"x" * 4096

    def timed():
        t0 = time.perf_counter()
        for _ in range(20000):
            os.pwrite(fd, block, 0)
        return time.perf_counter() - t0

    bare = min(timed() for _ in range(3))
    perf = subprocess.Popen(["perf", "trace", "record", "-q", "-o", path + ".data", "-p", str(os.getpid())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    traced = min(timed() for _ in range(3))
    perf.send_signal(signal.SIGINT)
    perf.wait()
    os.close(fd)
    return max(0.0, (traced - bare) / 20000 * 1000)


if __name__ == "__main__":
    main()

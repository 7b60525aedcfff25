#!/usr/bin/env python3
"""Times the commands that read a long audit log, on a log of ENTRIES lines.

    cargo build --release && python3 benches/audit_read.py [ENTRIES]   # default 1,000,000

The log is made from real entries: the release binary rotates two file-store secrets
(`app` twice, `other` three times), then `other`'s four entries of one rotation and two
`notification_delivered` lines are repeated up to ENTRIES, between `app`'s entries at the
start and the last sealed entries at the end (the writer checks the last line). The
repeated middle is not a valid hash chain: `audit verify` reports it, and is not timed.

Prints wall time, peak RSS (from wait4) and the ratio to a floor run in the same script,
`wc -l` reading the same file once, for: `rollback app` (reads the log for
`app`'s open work), `audit query --secret app`, `audit query --outcome failed`, `run
--once` (start-up reads the log for every secret's open work) and `audit report` for a
month before the log (only the period's entries are held).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

REKEYD = os.path.join(os.path.dirname(__file__), "..", "target", "release", "rekeyd")
ENTRIES = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000

POLICY = """
[daemon]
state_dir = "{dir}/state"
audit_log = "{dir}/state/audit.jsonl"

[backends.local]
type = "file"
path = "{dir}/store"
{secrets}
"""
SECRET = """
[[secrets]]
name = "{name}"
backend = "local"
schedule = {{ every = "30d" }}
generator = {{ type = "bytes", length = 32 }}
"""
NOTE = (
    '{"seq":1,"ts":"2026-11-26T02:25:05.510Z","host":"h","pid":1,"prev":"0",'
    '"event":"notification_delivered","id":"msg_1","target":"hooks",'
    '"notification":"secret.rotated","secrets":["other"],"attempts":1,"status":200,'
    '"hash":"0"}\n'
)


def timed(command, check=True):
    """Runs `command`; returns (seconds, peak RSS in KiB)."""
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.monotonic() - start
    if check and os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed")
    return took, usage.ru_maxrss


def rekeyd(*args, check=True):
    return timed([REKEYD, "--log", "error", *args], check)


def main():
    if not os.path.exists(REKEYD):
        sys.exit("build it first: cargo build --release")
    work = tempfile.mkdtemp(prefix="rekeyd-audit-read-")
    try:
        policy = os.path.join(work, "policy.toml")
        with open(policy, "w") as f:
            names = "".join(SECRET.format(name=n) for n in ("app", "other"))
            f.write(POLICY.format(dir=work, secrets=names))
        for name, times in (("app", 2), ("other", 3)):
            for _ in range(times):
                rekeyd("rotate", "-p", policy, name, "--force", "--by", "bench")
        log = os.path.join(work, "state", "audit.jsonl")
        with open(log) as f:
            lines = f.readlines()
        app = [l for l in lines if '"app"' in l]
        other = [l for l in lines if '"other"' in l]
        with open(log, "w") as f:
            f.writelines(app)
            for _ in range(max(0, ENTRIES - len(app) - 4) // 6):
                f.writelines(other[:4])
                f.write(NOTE)
                f.write(NOTE)
            f.writelines(other[-4:])
        shutil.copy(log, log + ".made")
        store = os.path.join(work, "store")
        shutil.copytree(store, store + ".made")
        with open(log) as f:
            count = sum(1 for _ in f)
        size = os.path.getsize(log) / 2**20

        def fresh():
            shutil.copy(log + ".made", log)
            shutil.rmtree(store)
            shutil.copytree(store + ".made", store)

        cases = [
            ("rollback app", ["rollback", "-p", policy, "app", "--by", "bench"]),
            ("audit query --secret app", ["audit", "query", log, "--secret", "app"]),
            ("audit query --outcome failed", ["audit", "query", log, "--outcome", "failed"]),
            ("run --once", ["run", "--once", "-p", policy]),
        ]
        floor, _ = timed(["wc", "-l", log])
        print(f"audit log: {count:,} entries, {size:.0f} MiB; floor (wc -l): {floor:.2f} s")
        print(f"{'command':<34} {'seconds':>8} {'x floor':>8} {'peak RSS MiB':>13}")

        def row(name, took, rss):
            print(f"{name:<34} {took:>8.2f} {took / floor:>7.1f}x {rss / 1024:>13.1f}")

        for name, args in cases:
            fresh()
            row(name, *rekeyd(*args))
        fresh()
        out = os.path.join(work, "report.csv")
        args = ["audit", "report", "-p", policy, "--until", "2026-01-01T00:00:00Z",
                "--format", "csv", "-o", out, log]
        # The repeated middle is not a valid chain, so the report's verify fails it: the
        # command exits non-zero after writing the report.
        row("audit report (a month before)", *rekeyd(*args, check=False))
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

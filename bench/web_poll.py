"""What the results page costs a scan (issue 36: at most 5% slower with 5 clients polling).

Runs the release appliance (`ctsentinel watch`, `[web]` on 127.0.0.1) on a temporary state folder
that already holds HISTORY results (copies of a real one, so the list is as long as a busy week's),
then drops the thin DICOM series of ../shared/data into the drop folder ROUNDS times, alternating
no clients and CLIENTS clients that each sign in and then fetch the list once a second (and every
fifth time the newest result page and its sheet). Each round's figure is the service's own
`timing_ms.total` of that series (read from its result), so start-up and stability waits do not
count. The clients run on the same 2 cores as the appliance: pessimistic for a page whose readers
sit at other computers. Prints medians and the ratio with / without clients, and the RSS of the
appliance idle after one series with the page on and (in a second run) off, and with the page on
after serving the rounds.

Usage: .venv/bin/python bench/web_poll.py [ROUNDS] [CLIENTS] [HISTORY]   (release build first:
`cargo build --release --bin ctsentinel`)
"""

import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("CTSENTINEL_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
BIN = os.path.join(REPO, "target", "release", "ctsentinel")
PASSWORD = "bench password 36"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(tmp: str, web: bool):
    drop, state = os.path.join(tmp, "drop"), os.path.join(tmp, "state")
    os.makedirs(drop, exist_ok=True)
    cfg = os.path.join(tmp, "config.toml")
    with open(cfg, "w") as f:
        f.write(
            f'board = "generic-x86_64"\ndrop = ["{drop}"]\nstate = "{state}"\nmodels = "{REPO}/models"\n'
            'stability_s = 1\npoll_interval_s = 0.2\nmin_free_mb = 100\ndisplay = "none"\nthreads = 2\n'
        )
        if web:
            f.write('\n[web]\nlisten = "127.0.0.1:0"\n')
    boards = os.path.join(REPO, "boards")
    if web:
        subprocess.run([BIN, "set-password", "--config", cfg, "--boards", boards], input=PASSWORD + "\n",
                       text=True, check=True, capture_output=True)
    p = subprocess.Popen([BIN, "watch", "--config", cfg, "--boards", boards], stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "RUST_LOG": "info"})
    addr = None
    for line in p.stderr:
        if "results page on https://" in line:
            addr = line.split("results page on https://")[1].split("/")[0]
        if "board generic" in line and not web:
            break
        if addr:
            break
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, drop, state, addr


def wait_result(state: str, patient: str) -> dict:
    root = os.path.join(state, "results")
    while True:
        for dirpath, _, files in os.walk(root):
            if os.path.basename(dirpath) == patient:
                for n in files:
                    if n.endswith(".json") and not n.startswith("."):
                        with open(os.path.join(dirpath, n)) as f:
                            return json.load(f)
        time.sleep(0.2)


class Client(threading.Thread):
    def __init__(self, addr: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.addr, self.stop, self.requests, self.errors = addr, stop, 0, 0
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # a bench client on the box itself
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                                  urllib.request.HTTPCookieProcessor())

    def get(self, path: str) -> bytes:
        self.requests += 1
        with self.opener.open(f"https://{self.addr}{path}", timeout=30) as r:
            return r.read()

    def run(self):
        body = urllib.parse.urlencode({"password": PASSWORD}).encode()
        self.opener.open(urllib.request.Request(f"https://{self.addr}/signin", data=body), timeout=30).read()
        k = 0
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                page = self.get("/").decode()
                k += 1
                if k % 5 == 0 and "/result/" in page:
                    rid = page.split('href="/result/')[1].split('"')[0]
                    self.get(f"/result/{rid}")
                    self.get(f"/result/{rid}/sheet.png")
            except Exception:
                self.errors += 1
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    history = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    thin = os.path.join(DATA, "dicom", "normal", "ctmd_normal001_thin")
    print(f"cpu: {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}, "
          f"{os.cpu_count()} cores; {rounds} rounds each, {clients} clients, {history} results listed")
    with tempfile.TemporaryDirectory() as tmp:
        p, drop, state, addr = start(tmp, web=True)
        try:
            # One real result, then HISTORY copies of it (with their sheets) for a long list.
            shutil.copytree(thin, os.path.join(drop, "seed", "thin"))
            seed = wait_result(state, "seed")
            time.sleep(2)
            idle_web = rss_kib(p.pid)
            src_dir = next(d for d, _, fs in os.walk(os.path.join(state, "results")) if os.path.basename(d) == "seed")
            for i in range(history):
                dst = os.path.join(os.path.dirname(src_dir), f"history{i:04d}")
                os.makedirs(dst, exist_ok=True)
                for n in os.listdir(src_dir):
                    shutil.copy(os.path.join(src_dir, n), os.path.join(dst, n))
            times = {"none": [], "clients": []}
            served = 0
            for r in range(rounds):
                for mode in ("none", "clients"):
                    stop = threading.Event()
                    cs = [Client(addr, stop) for _ in range(clients)] if mode == "clients" else []
                    for c in cs:
                        c.start()
                    time.sleep(2 if cs else 0)
                    patient = f"p{r}{mode}"
                    shutil.copytree(thin, os.path.join(drop, patient, "thin"))
                    res = wait_result(state, patient)
                    stop.set()
                    for c in cs:
                        c.join()
                        served += c.requests
                        if c.errors:
                            print(f"  client errors: {c.errors}")
                    times[mode].append(res["timing_ms"]["total"])
                    print(f"  round {r + 1} {mode:8s} {res['timing_ms']['total']} ms ({res['verdict']})")
            served_rss = rss_kib(p.pid)
        finally:
            p.terminate()
            p.wait()
    with tempfile.TemporaryDirectory() as tmp:
        q, drop, state, _ = start(tmp, web=False)
        shutil.copytree(thin, os.path.join(drop, "seed", "thin"))
        wait_result(state, "seed")
        time.sleep(2)
        idle_plain = rss_kib(q.pid)
        q.terminate()
        q.wait()
    a, b = statistics.median(times["none"]), statistics.median(times["clients"])
    print(f"series processing, median: {a:.0f} ms without clients, {b:.0f} ms with {clients} polling "
          f"({served} requests served): ratio {b / a:.3f}")
    print(f"idle RSS after one series: page on {idle_web / 1024:.1f} MiB, page off {idle_plain / 1024:.1f} MiB: "
          f"{(idle_web - idle_plain) / 1024:+.1f} MiB; page on after serving the rounds ({history} results listed): "
          f"{served_rss / 1024:.1f} MiB")
    _ = seed


if __name__ == "__main__":
    main()

"""What the results page costs a scan (issue 36: at most 5% slower with 5 clients polling).

Runs the release appliance (`ctsentinel watch`, `[web]` on 127.0.0.1) on a temporary state folder
that already holds HISTORY results (copies of a real one, so the list is as long as a busy week's),
then drops the thin DICOM series of ../shared/data into the drop folder ROUNDS times, alternating
no clients and CLIENTS clients that each sign in and then fetch the list once a second (and every
fifth time the newest result page and its sheet). Each round's figure is the service's own
`timing_ms.total` of that series (read from its result), so start-up and stability waits do not
count. The clients run on the same 2 cores as the appliance: pessimistic for a page whose readers
sit at other computers. A second run does the same with the page off. Prints the medians, the
ratio with / without clients, and the appliance's RSS after the first series and after the rounds
with the page on and off.

Usage: .venv/bin/python bench/web_poll.py [ROUNDS] [CLIENTS] [HISTORY], or
.venv/bin/python bench/web_poll.py memory (RSS over time with clients polling, see `memory`).
Build the release binary first: `cargo build --release --bin ctsentinel`.
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
    """Signs in once (the page allows 5 sign-ins a minute from one address: all clients here share
    127.0.0.1), then fetches the list once a second while `polling` is set."""

    def __init__(self, addr: str, polling: threading.Event, stop: threading.Event):
        super().__init__(daemon=True)
        self.addr, self.polling, self.stop, self.requests, self.errors = addr, polling, stop, 0, 0
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
            if not self.polling.wait(0.2):
                continue
            t = time.monotonic()
            try:
                page = self.get("/").decode()
                k += 1
                if k % 5 == 0 and "/result/" in page:
                    rid = page.split('href="/result/')[1].split('"')[0]
                    self.get(f"/result/{rid}")
                    self.get(f"/result/{rid}/sheet.png")
            except Exception as e:
                self.errors += 1
                print(f"  client error: {e}")
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))


def seed_and_history(p, drop: str, state: str, thin: str, history: int) -> int:
    """Process the thin series once ("seed"), then copy its result (with its sheet) HISTORY times
    for a long list; returns the RSS after the seed, in KiB."""
    shutil.copytree(thin, os.path.join(drop, "seed", "thin"))
    wait_result(state, "seed")
    time.sleep(2)
    rss = rss_kib(p.pid)
    src = next(d for d, _, fs in os.walk(os.path.join(state, "results")) if os.path.basename(d) == "seed")
    for i in range(history):
        dst = os.path.join(os.path.dirname(src), f"history{i:04d}")
        os.makedirs(dst, exist_ok=True)
        for n in os.listdir(src):
            shutil.copy(os.path.join(src, n), os.path.join(dst, n))
    return rss


def run(web: bool, rounds: int, clients: int, history: int, thin: str):
    """Seed, history, then `rounds` x (no clients, clients): per-mode series times, RSS figures."""
    times = {"none": [], "clients": []}
    with tempfile.TemporaryDirectory() as tmp:
        p, drop, state, addr = start(tmp, web=web)
        try:
            rss_seed = seed_and_history(p, drop, state, thin, history)
            polling, stop = threading.Event(), threading.Event()
            cs = [Client(addr, polling, stop) for _ in range(clients)] if web else []
            for c in cs:
                c.start()
            for r in range(rounds):
                for mode in ("none", "clients"):
                    if mode == "clients" and web:
                        polling.set()
                        time.sleep(2)
                    patient = f"p{r}{mode}"
                    shutil.copytree(thin, os.path.join(drop, patient, "thin"))
                    res = wait_result(state, patient)
                    polling.clear()
                    times[mode].append(res["timing_ms"]["total"])
                    print(f"  {'page on ' if web else 'page off'} round {r + 1} {mode:8s} {res['timing_ms']['total']} ms")
            time.sleep(2)
            rss_end = rss_kib(p.pid)
            stop.set()
            served = sum(c.requests for c in cs)
            errors = sum(c.errors for c in cs)
        finally:
            p.terminate()
            p.wait()
    return times, rss_seed, rss_end, served, errors


def memory(history: int = 200, clients: int = 5):
    """`bench/web_poll.py memory`: RSS of the page-on appliance after its first series, after 30 and
    60 s of CLIENTS clients polling a list of HISTORY results, and after the next series' heap trim."""
    thin = os.path.join(DATA, "dicom", "normal", "ctmd_normal001_thin")
    with tempfile.TemporaryDirectory() as tmp:
        p, drop, state, addr = start(tmp, web=True)
        try:
            print(f"after the first series: {seed_and_history(p, drop, state, thin, history) / 1024:.0f} MiB")
            polling, stop = threading.Event(), threading.Event()
            cs = [Client(addr, polling, stop) for _ in range(clients)]
            for c in cs:
                c.start()
            for k in (1, 2):
                polling.set()
                time.sleep(30)
                polling.clear()
                time.sleep(2)
                print(f"after {30 * k} s of {clients} clients ({sum(c.requests for c in cs)} requests): "
                      f"{rss_kib(p.pid) / 1024:.0f} MiB")
            shutil.copytree(thin, os.path.join(drop, "next", "thin"))
            wait_result(state, "next")
            time.sleep(2)
            print(f"after the next series (heap trimmed): {rss_kib(p.pid) / 1024:.0f} MiB")
            stop.set()
        finally:
            p.terminate()
            p.wait()


def main():
    if sys.argv[1:2] == ["memory"]:
        memory()
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    history = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    thin = os.path.join(DATA, "dicom", "normal", "ctmd_normal001_thin")
    print(f"cpu: {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}, "
          f"{os.cpu_count()} cores; {rounds} rounds each, {clients} clients, {history} results listed")
    on, on_seed, on_end, served, errors = run(True, rounds, clients, history, thin)
    off, off_seed, off_end, _, _ = run(False, rounds, 0, history, thin)
    a, b = statistics.median(on["none"]), statistics.median(on["clients"])
    print(f"series processing with the page on, median: {a:.0f} ms without clients, {b:.0f} ms with {clients} "
          f"polling ({served} requests served, {errors} errors): ratio {b / a:.3f}")
    c = statistics.median(off["none"] + off["clients"])
    print(f"series processing with the page off, median: {c:.0f} ms; page on, no clients / page off: {a / c:.3f}")
    print(f"RSS after one series: page on {on_seed / 1024:.1f} MiB, off {off_seed / 1024:.1f} MiB "
          f"({(on_seed - off_seed) / 1024:+.1f}); after the rounds: on {on_end / 1024:.1f} MiB, off "
          f"{off_end / 1024:.1f} MiB ({(on_end - off_end) / 1024:+.1f})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Browser test of the dashboard (issue 7): starts a 3-node devnet on loopback, opens
/dashboard in headless Chromium (DevTools protocol over --remote-debugging-pipe, stdlib only),
waits for live data and asserts the page shows height > 0, at least 2 peers, a convergence plot
with at least 2 points, a connected event stream and a height that moves while the page is open.
Saves a screenshot. Exit status 0 on success; every failure names what was missing.

usage: dashboard_check.py --doin PATH [--out dashboard.png] [--base-port 18900]
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-pipe", "--window-size=1440,1000",
]


def fail(msg):
    print(f"dashboard_check: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


class Cdp:
    """The DevTools protocol over the pipe Chromium opens on fds 3 (in) and 4 (out)."""

    def __init__(self, chromium, user_dir):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():
            # Through fresh copies: a pipe end may already be fd 3 or 4, and dup2 onto itself
            # would keep its close-on-exec flag.
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3, inheritable=True)
            os.dup2(b, 4, inheritable=True)

        self.proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={user_dir}", "about:blank"],
            preexec_fn=fds, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.next_id = 0
        self.buf = b""
        self.session = None

    def send(self, method, params=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        fail(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                fail(f"chromium closed the pipe during {method}")
            self.buf += chunk
        fail(f"{method}: no answer in {timeout} s")

    def close(self):
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except Exception:
            pass


def get_json(url):
    with urllib.request.urlopen(url, timeout=3) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--doin", required=True)
    ap.add_argument("--out", default="dashboard.png")
    ap.add_argument("--base-port", type=int, default=18900)
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        fail("chromium is not installed (apt-get install -y chromium)")
    work = tempfile.mkdtemp(prefix="doin-dash-")
    base = f"http://127.0.0.1:{args.base_port}"
    devnet = subprocess.Popen(
        [args.doin, "devnet", "--nodes", "3", "--fl-contributors", "4", "--duration", "180",
         "--base-port", str(args.base_port),
         "--dir", os.path.join(work, "devnet")],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "devnet.err"), "w"),
    )
    cdp = None
    try:
        # The devnet is up once node 0 answers and has a block beyond genesis.
        deadline = time.time() + 90
        while True:
            try:
                if get_json(base + "/chain/status")["tip_index"] >= 1:
                    break
            except Exception:
                pass
            if time.time() > deadline or devnet.poll() is not None:
                fail("the devnet did not produce a block in 90 s; see " + work)
            time.sleep(0.5)
        cdp = Cdp(chromium, os.path.join(work, "profile"))
        targets = cdp.send("Target.getTargets")["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target = page["targetId"] if page else cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        cdp.session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1440, "height": 1500, "deviceScaleFactor": 1, "mobile": False})
        cdp.send("Page.enable")
        cdp.send("Page.navigate", {"url": base + "/dashboard"})

        def shown():
            r = cdp.send("Runtime.evaluate", {
                "expression": "JSON.stringify(Object.assign({}, document.body ? document.body.dataset : {}, "
                              "{points: document.querySelectorAll('#plot circle.pt').length}))",
                "returnByValue": True,
            })
            return json.loads(r["result"]["value"])

        deadline = time.time() + 60
        first = None
        while True:
            d = shown()
            height, peers = int(d.get("height", 0)), int(d.get("peers", 0))
            points = min(int(d.get("plotPoints", 0)), int(d.get("points", 0)))
            fl_rows = int(d.get("flRows", 0))
            # The inference/marketplace cards rendered from their endpoints: the devnet's
            # quadratic domain has no model, node 0 serves its federated job's verified model
            # (one served domain), the market present.
            serving_cards = d.get("serving") == "1" and d.get("market") == "1"
            # The PoUW card: node 0 (supervising the federated job, and mining) generated blocks.
            pouw_card = d.get("pouwRole") in ("SUPERVISOR", "MINER") and int(d.get("blocksMined", 0)) > 0
            ready = (height > 0 and peers >= 2 and points >= 2 and d.get("live") == "1" and fl_rows >= 2
                     and serving_cards and pouw_card)
            if ready and first is None:
                first = height
            # Live: the height the page shows moves on while it stays open.
            if ready and height > first:
                break
            if time.time() > deadline:
                fail(f"the dashboard showed {d} after 60 s (want height > 0 and rising, peers >= 2, "
                     f">= 2 plot points, live event stream, >= 2 federated contributor rows, "
                     f"the inference and marketplace cards, the PoUW card of a node that mined blocks)")
            time.sleep(0.5)
        time.sleep(1.0)
        png = base64.b64decode(cdp.send("Page.captureScreenshot", {"format": "png"})["data"])
        with open(args.out, "wb") as f:
            f.write(png)
        print(json.dumps({"dashboard_check": "ok", "height": height, "peers": peers, "plot_points": points,
                          "fl_rows": fl_rows, "serving_cards": serving_cards, "pouw_card": pouw_card,
                          "screenshot": os.path.abspath(args.out), "bytes": len(png)}))
    finally:
        if cdp:
            cdp.close()
        devnet.terminate()
        try:
            devnet.wait(timeout=30)
        except subprocess.TimeoutExpired:
            devnet.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

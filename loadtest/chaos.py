#!/usr/bin/python3
"""chaos.py - `make chaos`: races on one strata-server, for the lifetime bugs a
well-behaved load never shows. Eight clients hammer a server started with tight
limits (2 resident sessions, a 2 s session TTL, a 3-request batch, a 2-request
queue, small checkpoint and prefix-cache budgets) with every kind of request on
shared sessions: create, fork, rewind, checkpoint, export + import, delete, and
completions, chat (tools, JSON mode), activations (multi-run, commit) on them,
a third of them dropped mid-answer, plus garbage bodies. Sessions get deleted,
evicted and expired while other requests use them.

Passes when the server answers /health at the end, never answers 5xx (503 while
shutting down aside), stops cleanly on SIGINT, and its log holds no sanitizer
report: `make chaos` runs it on the ASan + UBSan build.

With --kill-midway the server gets SIGKILL halfway through instead, and a new one on
the same state directory must load every session file written until then (saves are
atomic: a kill leaves each session at its last save, never a corrupt file).

usage: chaos.py SERVER_BINARY [--seconds 60] [--seed 1] [--model DIR] [--stop-midway | --kill-midway]
                [-- SERVER_ARGS...]
"""
import argparse, http.client, json, os, random, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time

PROMPTS = ["In the beginning", "And God said, Let there be light", "The LORD is my shepherd", "1 2 3 4 5 6 7 8"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


class Chaos:
    def __init__(self, port):
        self.port, self.ids, self.lock = port, [], threading.Lock()
        self.counts, self.failures = {}, []

    def count(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def call(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        c.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        out = r.read()
        c.close()
        if r.status >= 500 and r.status != 503:
            with self.lock:
                self.failures.append(f"{method} {path} -> {r.status} {out[:300]!r}")
        self.count(f"{method} {r.status}")
        return r.status, out

    def drop(self, path, body, nbytes):
        """send, read a little of the answer, hang up"""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        data = json.dumps(body).encode()
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        try:
            s.recv(nbytes)
        except OSError:
            pass
        s.close()
        self.count("dropped")

    def session(self, rng):
        with self.lock:
            return rng.choice(self.ids) if self.ids else "none"

    def keep(self, status, out, want=201):
        if status == want:
            with self.lock:
                self.ids.append(json.loads(out)["id"])

    def send(self, rng, path, body, drop_share):
        if rng.random() < drop_share:
            self.drop(path, body, rng.randrange(1, 300))
        else:
            self.call("POST", path, body)

    def one(self, rng):
        sid, k = self.session(rng), rng.randrange(15)
        base = f"/v1/sessions/{sid}"
        if k == 0:
            self.keep(*self.call("POST", "/v1/sessions", {"prompt": rng.choice(PROMPTS)} if rng.random() < .8 else {}))
        elif k == 1:
            if self.call("DELETE", base)[0] == 200:
                with self.lock:
                    if sid in self.ids:
                        self.ids.remove(sid)
        elif k == 2:
            self.keep(*self.call("POST", base + "/fork"))
        elif k == 3:
            self.call("POST", base + "/checkpoints")
        elif k == 4:
            self.call("POST", base + "/rewind", {"position": rng.randrange(0, 12)})
        elif k == 5:
            status, out = self.call("GET", base + "/export")
            if status == 200:
                self.keep(*self.call("POST", "/v1/sessions/import", out))
        elif k in (6, 7):
            body = {"prompt": rng.choice(PROMPTS), "max_tokens": rng.randrange(1, 12), "stream": rng.random() < .5,
                    "temperature": rng.choice([0, 0.7, 1.0]), "n": 1 if rng.random() < .8 else 2}
            if rng.random() < .6:
                body.update(session=sid, n=1)
            self.send(rng, "/v1/completions", body, .3)
        elif k == 8:
            body = {"messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                    "max_tokens": rng.randrange(1, 16), "stream": rng.random() < .5}
            if rng.random() < .5:
                body["session"] = sid
            if rng.random() < .3:
                body["response_format"] = {"type": "json_object"}
            elif rng.random() < .4:
                body.update(tools=TOOLS, tool_choice=rng.choice(["auto", "required", "none"]))
            self.send(rng, "/v1/chat/completions", body, .2)
        elif k in (9, 10):
            if rng.random() < .7:
                body = {"session": sid, "runs": [{"prompt": rng.choice(PROMPTS), "hooks": ["logits", "blocks.1.hook_out"]}
                                                 for _ in range(rng.randrange(1, 6))]}
            else:
                body = {"session": sid, "prompt": rng.choice(PROMPTS), "hooks": ["logits"], "commit": rng.random() < .5}
            self.send(rng, "/v1/activations", body, .3)
        elif k == 11:
            self.call("GET", rng.choice(["/v1/sessions", base, "/metrics", "/v1/models"]))
        elif k == 12:
            self.call("POST", rng.choice(["/v1/completions", "/v1/activations", "/v1/sessions/import"]),
                      bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64))))
        else:
            self.call("POST", "/v1/completions", {"prompt": rng.choice(PROMPTS), "max_tokens": 4, "logprobs": 3,
                                                  "n": rng.randrange(1, 4)})

    def client(self, seed, deadline):
        rng = random.Random(seed)
        while time.time() < deadline:
            try:
                self.one(rng)
            except (OSError, http.client.HTTPException) as e:
                self.count("client error " + type(e).__name__)


def start(args, log):
    """the server and its port (None when it did not come up)"""
    srv = subprocess.Popen(args, stderr=log, stdout=log)
    for _ in range(600):
        log.seek(0)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read())
        if m or srv.poll() is not None:
            return srv, m and int(m.group(1))
        time.sleep(0.1)
    return srv, None


def reload_all(args, log_path):
    """After a kill -9: a new server on the same state directory loads every session
    file (each GET loads one); problems found."""
    log = open(log_path, "w+")
    srv, port = start(args, log)
    if not port:
        return ["the server did not restart"]
    chaos, problems = Chaos(port), []
    status, out = chaos.call("GET", "/v1/sessions")
    ids = [s["id"] for s in json.loads(out)["data"]] if status == 200 else []
    for sid in ids:
        status, _ = chaos.call("GET", f"/v1/sessions/{sid}")
        if status != 200:
            problems.append(f"session {sid} did not come back after kill -9: {status}")
    srv.send_signal(signal.SIGINT)
    if srv.wait(timeout=60) != 0:
        problems.append("the restarted server did not stop cleanly")
    log.seek(0)
    problems += [l for l in log.read().splitlines() if " lost: " in l or "Sanitizer" in l or "runtime error" in l]
    print(f"chaos: {len(ids)} sessions on disk after kill -9, all reloaded" if not problems else "")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default="models/strata-demo")
    ap.add_argument("--stop-midway", action="store_true", help="send SIGINT halfway through, under load")
    ap.add_argument("--kill-midway", action="store_true",
                    help="send SIGKILL halfway through, then restart on the same state directory and load every session")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    state = tempfile.mkdtemp(prefix="strata-chaos-")
    log = open(os.path.join(state, "server.log"), "w+")
    args = [a.server, "--model", a.model, "--port", "0", "--state-dir", state, "--max-sessions", "2",
            "--session-ttl", "2", "--max-running", "3", "--max-queued", "2", "--max-step-tokens", "16",
            "--checkpoint-every", "4", "--session-checkpoint-bytes", "100000", "--prefix-cache-bytes", "200000",
            "--connection-timeout", "5"] + extra
    srv, port = start(args, log)
    if not port:
        sys.exit("chaos: the server did not start:\n" + open(log.name).read())
    chaos = Chaos(port)
    deadline = time.time() + a.seconds
    clients = [threading.Thread(target=chaos.client, args=(a.seed * 100 + i, deadline)) for i in range(8)]
    for t in clients:
        t.start()
    if a.stop_midway or a.kill_midway:   # in the thick of it
        time.sleep(a.seconds / 2)
        srv.send_signal(signal.SIGKILL if a.kill_midway else signal.SIGINT)
    for t in clients:
        t.join()
    try:
        health = 200 if a.stop_midway or a.kill_midway else chaos.call("GET", "/health")[0]
    except OSError as e:
        health = f"nothing ({e})"
    if srv.poll() is None:
        srv.send_signal(signal.SIGINT)
    code = srv.wait(timeout=60)
    log.seek(0)
    text = log.read()
    reports = [l for l in text.splitlines() if "Sanitizer" in l or "runtime error" in l]
    for key in sorted(chaos.counts):
        print(f"{chaos.counts[key]:7d}  {key}")
    problems = chaos.failures[:20] + reports[:20]
    if health != 200:
        problems.append(f"/health answered {health}")
    if code != 0 and not (a.kill_midway and code == -signal.SIGKILL):
        problems.append(f"the server exited with {code}")
    if a.kill_midway:
        problems += reload_all(args, os.path.join(state, "restart.log"))
    for p in problems:
        print("chaos: " + p)
    if problems:
        print(f"chaos: FAILED ({a.seconds:.0f} s, seed {a.seed}; the server's log: {log.name})")
        sys.exit(1)
    shutil.rmtree(state)
    print(f"chaos: passed ({a.seconds:.0f} s, seed {a.seed})")


if __name__ == "__main__":
    main()

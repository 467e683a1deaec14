#!/usr/bin/env python3
"""Issue 15's attacks against one pixgate binary, with figures: run it against the binary of
a commit before the hardening and after, and compare. Loopback only. Usage:
    python3 benches/attacks.py [PIXGATE_BINARY]     (default target/release/pixgate)
Each line: attack, then what was measured (status, time, peak RSS of the server)."""

import json, os, resource, socket, struct, subprocess, sys, tempfile, threading, time, urllib.request, zlib

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/pixgate"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RSS_CAP_MIB = 6144  # a server past this is killed (the machine must survive the "before")
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))


class Server:
    def __init__(self, env=None, local_root=None):
        e = dict(os.environ, PIXGATE_LOG_LEVEL="warn", PIXGATE_POLICY_FILE="")
        e.update(env or {})
        self.mport = free_port()
        e["PIXGATE_METRICS_LISTEN"] = f"127.0.0.1:{self.mport}"
        args = [BIN, "serve", "--listen", "127.0.0.1:0"]
        if local_root:
            args += ["--local-root", local_root]
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=e, cwd=ROOT)
        line = self.p.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise SystemExit(f"{BIN} did not start: {line!r}")
        self.addr = line.split()[-1]
        self.peak = 0
        self.stop = False
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        while not self.stop and self.p.poll() is None:
            rss = self.rss()
            self.peak = max(self.peak, rss)
            if rss > RSS_CAP_MIB:
                self.p.kill()
                self.killed = True
            time.sleep(0.05)

    def rss(self):
        try:
            for l in open(f"/proc/{self.p.pid}/status"):
                if l.startswith("VmRSS:"):
                    return int(l.split()[1]) // 1024
        except OSError:
            pass
        return 0

    def metric(self, name):
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics", timeout=5).read().decode()
        except OSError:
            return None
        for l in text.splitlines():
            if l.startswith(name + " ") or l.startswith(name + "{"):
                return float(l.split()[-1])
        return None

    def close(self):
        self.stop = True
        self.p.kill()
        self.p.wait()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(addr, path, headers=None, timeout=60, source="127.0.0.1"):
    """(status, seconds, body) of one GET, from `source`."""
    host, port = addr.rsplit(":", 1)
    t = time.time()
    try:
        s = socket.create_connection((host, int(port)), timeout=timeout, source_address=(source, 0))
        h = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{h}\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        status = int(data.split(b" ", 2)[1]) if data else 0
        return status, time.time() - t, data.split(b"\r\n\r\n", 1)[-1]
    except (OSError, ValueError, IndexError):
        return 0, time.time() - t, b""


def report(name, text):
    print(f"{name:<58} {text}", flush=True)


def parallel(n, fn):
    out = [None] * n
    ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i))) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def png_with(chunks):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
    for t, d in chunks:
        out += chunk(t, d)
    return out + chunk(b"IDAT", zlib.compress(b"\0" * 200)) + chunk(b"IEND", b"")


def main():
    print(f"binary: {BIN}")
    # 1. Silent connections and h2c preface-only connections holding the cap.
    s = Server({"PIXGATE_MAX_CONNECTIONS": "2048"})
    held = []
    for i in range(2100):
        try:
            c = socket.create_connection(tuple_addr(s.addr), timeout=2)
            if i % 2:
                c.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            held.append(c)
        except OSError:
            break
    oks = [get(s.addr, "/health", timeout=3, source="127.0.0.2") for _ in range(8)]
    report("1. 2,100 silent connections: /health from another address",
           f"{sum(1 for o in oks if o[0] == 200)}/8 answered (max {max(o[1] for o in oks)*1000:.0f} ms)")
    t = time.time()
    open_after = 0
    for c in held:
        c.settimeout(max(0.1, 15 - (time.time() - t)))
        try:
            if c.recv(1) == b"" or True:
                pass
        except socket.timeout:
            open_after += 1
        except OSError:
            pass
    report("   silent connections still open 15 s later", f"{open_after}/{len(held)}")
    for c in held:
        c.close()
    s.close()

    # 2. Unbounded sigmas.
    for opts in ["bl:1e9", "sh:1e9", "bl:1e300"]:
        s = Server({"PIXGATE_REQUEST_TIMEOUT": "10"})
        st, secs, _ = get(s.addr, f"/insecure/{opts}/plain/local:///seeding.jpg")
        time.sleep(1)
        report(f"2. {opts} on a 2.3 MP photo", f"{st} in {secs:.2f} s, peak RSS {s.peak} MiB"
               + (" (killed at the cap)" if getattr(s, "killed", False) else ""))
        s.close()

    # 3. Jobs outliving their deadline: how long a worker stays busy after the 503.
    for opts in ["el:1/rs:fit:7000:7000/sh:100/f:png", "bl:1000", "el:1/rs:fit:7000:7000/f:avif"]:
        s = Server({"PIXGATE_REQUEST_TIMEOUT": "1", "PIXGATE_WORKERS": "1"})
        st, secs, _ = get(s.addr, f"/insecure/{opts}/plain/local:///seeding.jpg")
        t = time.time()
        while (s.metric("pixgate_cpu_busy_workers") or 0) > 0 and time.time() - t < 120:
            time.sleep(0.05)
        report(f"3. {opts}, request_timeout 1 s",
               f"{st} at {secs:.2f} s, worker busy until {secs + time.time() - t:.2f} s, peak RSS {s.peak} MiB")
        s.close()

    # 4. A PNG whose iCCP inflates to 512 MiB.
    d = tempfile.mkdtemp()
    c = zlib.compressobj(9)
    z = b"".join(c.compress(b"\0" * (1 << 20)) for _ in range(512)) + c.flush()
    open(os.path.join(d, "bomb.png"), "wb").write(png_with([(b"iCCP", b"bomb\0\0" + z)]))
    for path, n in [("/insecure/w:20/plain/local:///bomb.png", 1), ("/insecure/w:20/plain/local:///bomb.png", 4),
                    ("/info/insecure/plain/local:///bomb.png", 4)]:
        s = Server(local_root=d)
        res = parallel(n, lambda i: get(s.addr, path + f"?n={i}"))
        time.sleep(0.3)
        report(f"4. iCCP bomb, {n} at once: {path.split('/')[1]}",
               f"{[r[0] for r in res]}, peak RSS {s.peak} MiB")
        s.close()

    # 5. Lua work in C.
    pol = os.path.join(d, "policy.lua")
    open(pol, "w").write("function decide(req)\n"
                         " if req.key == 'find' then ('a'):rep(1e5):find('.-.-.-.-b') end\n"
                         " return { allow = true }\nend\n")
    s = Server({"PIXGATE_POLICY_FILE": pol})
    bad = []
    for _ in range(2):
        th = threading.Thread(target=lambda: bad.append(get(s.addr, "/insecure/w:20/plain/local:///seeding.jpg",
                                                           {"X-Api-Key": "find"}, timeout=20)))
        th.start()
    time.sleep(0.5)
    st, secs, _ = get(s.addr, "/insecure/w:20/plain/local:///seeding.jpg", {"X-Api-Key": "ok"}, timeout=10)
    report("5. two string.find backtracking calls: another request", f"{st} in {secs:.2f} s")
    s.close()
    open(pol, "w").write("function decide(req) return { allow = true } end\n")
    s = Server({"PIXGATE_POLICY_FILE": pol})
    open(pol, "w").write("local s = ('a'):rep(1e5) s:find('.-.-.-.-b')\nfunction decide(req) return { allow = true } end\n")
    time.sleep(3)
    st, secs, _ = get(s.addr, "/health", timeout=10)
    report("   a runaway edit of the policy: /health 3 s later", f"{st} in {secs:.2f} s")
    s.close()

    # 6. The shipped policy with `brust`: a paying key under a failing policy.
    typo = open(os.path.join(ROOT, "lua/policy.lua")).read().replace("burst = plan.burst", "brust = plan.burst")
    if "\ntests = {" in typo:
        typo = typo[: typo.index("\ntests = {")]
    tdir = tempfile.mkdtemp()
    open(os.path.join(tdir, "policy.lua"), "w").write(typo)
    open(os.path.join(tdir, "keys.lua"), "w").write(open(os.path.join(ROOT, "lua/keys.lua")).read())
    s = Server({"PIXGATE_POLICY_FILE": os.path.join(tdir, "policy.lua")})
    sts = [get(s.addr, "/insecure/w:20/plain/local:///seeding.jpg", {"X-Api-Key": "demo-free"})[0] for _ in range(60)]
    report("6. `brust` typo (untested copy): 60 requests of a free key (10/s)",
           f"{sts.count(200)} served, {sts.count(429)} limited")
    s.close()

    # 8/9. Client input that gave 500s.
    s = Server()
    st, _, body = get(s.addr, "/insecure/rs:force:65535:1/el:1/plain/local:///seeding.jpg")
    report("8. rs:force:65535:1/el:1 (JPEG)", f"{st} {body[:60]!r}" if st != 200 else "200")
    s.close()
    out = os.path.join(d, "out.png")
    subprocess.run([BIN, "transform", os.path.join(ROOT, "samples/seeding.jpg"), "rs:fit:100:100", out],
                   capture_output=True)
    head = open(out, "rb").read(4) if os.path.exists(out) else b""
    report("9. pixgate transform in.jpg ... out.png", "PNG bytes" if head == b"\x89PNG" else f"starts {head!r}")

    # Memory: 16 concurrent worst-case valid requests.
    s = Server({"PIXGATE_REQUEST_TIMEOUT": "120", "PIXGATE_WORKERS": "16"})
    res = parallel(16, lambda i: get(s.addr, f"/insecure/el:1/rs:fit:6000:6000/cb:{i}/plain/local:///seeding.jpg",
                                     timeout=180))
    time.sleep(0.3)
    report("16 concurrent 6000 px results, 16 workers",
           f"{sorted(set(r[0] for r in res))}, {max(r[1] for r in res):.1f} s, peak RSS {s.peak} MiB")
    s.close()


def tuple_addr(addr):
    h, p = addr.rsplit(":", 1)
    return h, int(p)


if __name__ == "__main__":
    main()

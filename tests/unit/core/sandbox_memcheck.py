"""Child process of the streaming test: archive, upload, download and extract SIZE bytes against a loopback server.

Prints the growth of the peak RSS (KiB) while the four steps ran: what streaming promises is that it
does not grow with the sandbox. The server streams too (1 MiB reads), and lives in this process.
"""

from __future__ import annotations

import http.server
import json
import os
import resource
import sys
import threading

from diracx_bridge.adapters import _sandbox

SIZE = int(sys.argv[1])
store = {}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        left = int(self.headers["content-length"])
        path = os.path.join(work, "stored")
        with open(path, "wb") as out:
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                out.write(chunk)
                left -= len(chunk)
        store["path"] = path
        self.send_response(204)
        self.end_headers()

    def do_GET(self):
        # The stored multipart body holds the archive; serve the archive bytes (from the recorded offsets).
        start, length = store["range"]
        self.send_response(200)
        self.send_header("content-length", str(length))
        self.end_headers()
        with open(store["path"], "rb") as f:
            f.seek(start)
            left = length
            while left:
                chunk = f.read(min(left, 1 << 20))
                self.wfile.write(chunk)
                left -= len(chunk)


work = _sandbox.private_dir()
src = os.path.join(work, "payload.bin")
with open(src, "wb") as f:
    for _ in range(SIZE >> 20):
        f.write(os.urandom(1 << 20))
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}"
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d = _sandbox.private_dir()
archive = _sandbox.build_archive([src], "tar.zst", d)
_sandbox.upload(url + "/bucket", {"key": "k"}, archive, attempts=1, timeout=60)
with open(store["path"], "rb") as stored:
    raw = stored.read(4096)
start = raw.index(b"\r\n\r\n", raw.index(b'filename="file"')) + 4
store["range"] = (start, archive.size)
d2 = _sandbox.private_dir()
sha, size = _sandbox.download(
    url + "/bucket/k?X-Amz-Signature=x", os.path.join(d2, "a.tar.zst"), attempts=1, timeout=60
)
total = _sandbox.extract(os.path.join(d2, "a.tar.zst"), os.path.join(d2, "out"), "loc")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(
    json.dumps(
        {
            "growth_kib": after - before,
            "sha_ok": sha == archive.checksum,
            "size_ok": size == archive.size,
            "total": total,
        }
    )
)
for x in (work, d, d2):
    _sandbox.remove_dir(x)

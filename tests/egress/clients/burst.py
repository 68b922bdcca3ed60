"""Connect N times to HOST:PORT (connect + close), report what happened as JSON."""

import json
import os
import socket
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
res = {"pid": os.getpid(), "uid": os.getuid(), "ok": 0, "refused": 0, "other": 0}
for _ in range(n):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        res["ok"] += 1
    except ConnectionRefusedError:
        res["refused"] += 1
    except OSError:
        res["other"] += 1
    finally:
        s.close()
print(json.dumps(res))

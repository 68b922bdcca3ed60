"""A direct-to-MX sender: connect, read the banner, EHLO, QUIT, exit (milliseconds)."""

import json
import os
import socket
import sys

host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
out = {"pid": os.getpid(), "uid": os.getuid(), "result": ""}
try:
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((host, port))
    f = s.makefile("rwb")
    banner = f.readline()
    f.write(b"EHLO spam.example\r\n")
    f.flush()
    while True:
        line = f.readline()
        if not line or line[3:4] != b"-":
            break
    f.write(b"QUIT\r\n")
    f.flush()
    f.readline()
    s.close()
    out["result"] = "ok:" + banner[:3].decode()
except ConnectionRefusedError:
    out["result"] = "refused"
except OSError as exc:
    out["result"] = f"error:{exc}"
print(json.dumps(out))

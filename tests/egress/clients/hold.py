"""Connect, hold the connection open for SECONDS, close."""

import json
import os
import socket
import sys
import time

host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.create_connection((host, port), timeout=5)
time.sleep(secs)
s.close()
print(json.dumps({"pid": os.getpid(), "uid": os.getuid()}))

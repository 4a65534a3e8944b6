# Hosts a c10d TCPStore as torchrun 2.x's agent does (TORCHELASTIC_USE_AGENT_STORE=True), for
# test/distributed.test.ts: prints "ready" once it listens on 127.0.0.1:<port>, then serves until
# its standard input closes. Without libuv where the torch build has none (Debian's 2.6).
import sys
from datetime import timedelta

import torch.distributed as dist

port = int(sys.argv[1])
kw = dict(host_name="127.0.0.1", port=port, world_size=None, is_master=True, timeout=timedelta(seconds=60), wait_for_workers=False)
try:
    store = dist.TCPStore(**kw, use_libuv=False)  # torch >= 2.2
except TypeError:
    store = dist.TCPStore(**kw)  # 1.13: no libuv option
print("ready", flush=True)
sys.stdin.read()

"""Ray alone: a driver process whose tasks do nothing, timed by figure 8 as the floor under any Ray executor.

It connects as trtforge's driver does (a local instance of N CPUs with the driver's object store, or
an address), runs one one-CPU task per recipe of the batch, and disconnects. It imports nothing but
Ray, so its time is Ray's own: start-up (or connecting), a worker process per CPU, scheduling, stop.
"""

from __future__ import annotations

import logging
import sys


def alone_argv(tasks: int, cpus: int, address: str | None) -> list[str]:
    """The command line of a fresh driver running ``tasks`` tasks (``address`` None: a local instance)."""
    from trtforge.stages.ray_driver import LOCAL_OBJECT_STORE

    return [sys.executable, "-m", "bench.ray_alone", str(tasks), str(cpus), str(LOCAL_OBJECT_STORE), address or ""]


def main(tasks: int, cpus: int, object_store: int, address: str) -> None:
    import ray

    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(address="local", num_cpus=cpus, object_store_memory=object_store, include_dashboard=False, **quiet)

    @ray.remote(num_cpus=1)
    def nothing(index: int) -> int:
        return index

    ray.get([nothing.remote(index) for index in range(tasks)])
    ray.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])

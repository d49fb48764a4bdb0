"""A local dask.distributed cluster set up for segmentation work.

dask.distributed starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so that freed memory goes
back to the system at once. Segmentation allocates and frees arrays of hundreds of megabytes per
block; with that setting every block pays the page faults again, which nearly halved a worker's
speed (README, "Large images and clusters"), while memory stays bounded by the blocks in flight
either way. Workers get one thread each (torch's intra-op threads follow ``OMP_NUM_THREADS=1``):
processes, not threads, share the cores.
"""

from __future__ import annotations


def local_cluster(workers: int):
    """A ``dask.distributed.LocalCluster`` of ``workers`` single-threaded worker processes."""
    import dask
    import distributed

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None)

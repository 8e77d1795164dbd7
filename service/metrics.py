"""Prometheus metrics, read from the job store at scrape time (so every worker's work is counted).

- ``aqa_queue_depth``: jobs accepted and not finished; ``aqa_queue_capacity``: the 429 threshold.
- ``aqa_jobs{state}``: queued and running now.
- ``aqa_jobs_finished_total{state}``: done and failed jobs since the store was created.
- ``aqa_stage_seconds{stage}``: histogram of queue_wait, decode, features, voting and total seconds.
- ``aqa_jobs_scored_by_batch_size{size}``: scored jobs by the number of jobs in their forward pass (dynamic
  batching, ``AQA_WORKER_BATCH_SIZE``).
- ``aqa_workers``: live worker processes (announced within the last three heartbeats).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from service.jobs import BATCH_COUNTER, LATENCY_BUCKETS, JobStore, histograms_from_counters


class StoreCollector:
    def __init__(self, store: JobStore, capacity: int) -> None:
        self.store = store
        self.capacity = capacity

    def collect(self) -> Iterator[Metric]:
        counts = self.store.state_counts()
        yield GaugeMetricFamily("aqa_queue_depth", "Jobs accepted and not finished (queued + running).",
                                value=counts["queued"] + counts["running"])
        yield GaugeMetricFamily("aqa_queue_capacity", "Queue depth above which submissions get 429.",
                                value=self.capacity)
        jobs = GaugeMetricFamily("aqa_jobs", "Jobs queued or running now.", labels=["state"])
        for state in ("queued", "running"):
            jobs.add_metric([state], counts[state])
        yield jobs
        finished = CounterMetricFamily("aqa_jobs_finished", "Jobs finished since the job store was created.",
                                       labels=["state"])
        for state in ("done", "failed"):
            finished.add_metric([state], counts[state])
        yield finished
        counters = self.store.counters()
        batched = CounterMetricFamily("aqa_jobs_scored_by_batch_size",
                                      "Scored jobs by the number of jobs in their forward pass.", labels=["size"])
        by_size = {int(name.removeprefix(BATCH_COUNTER)): value for name, value in counters.items()
                   if name.startswith(BATCH_COUNTER)}
        for size in sorted(by_size):
            batched.add_metric([str(size)], by_size[size])
        yield batched
        stages = HistogramMetricFamily("aqa_stage_seconds", "Seconds per scoring stage.", labels=["stage"])
        for stage, histogram in sorted(histograms_from_counters(counters).items()):
            cumulative, buckets = 0, []
            for label in [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]:
                cumulative += histogram.buckets.get(label, 0)
                buckets.append((label, cumulative))
            stages.add_metric([stage], buckets, sum_value=histogram.total)
        yield stages
        workers = sum(m.info.workers for m in self.store.live_models(time.time()))
        yield GaugeMetricFamily("aqa_workers", "Live worker processes with a loaded model.", value=workers)


def metrics_registry(store: JobStore, capacity: int) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, capacity))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

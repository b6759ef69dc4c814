"""Live quality through the real trainer: a synthetic stream with planted tastes goes through
Kafka, the trainer scores a sample of it before learning, and its `/metrics` endpoint serves
the live HR@10, coverage and popular-share series."""

from __future__ import annotations

import re
import threading
import urllib.request
from typing import Any

import pytest
from pipeline_helpers import free_ports

from streamrec.consumers.config import Config
from streamrec.consumers.trainer import Trainer
from streamrec.streaming import kafka_io
from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream

pytestmark = pytest.mark.integration

_SAMPLE = re.compile(r"^([a-z_0-9]+)(\{[^}]*\})? (\S+)$")


def scrape(port: int) -> dict[str, float]:
    """`/metrics` as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def run_and_scrape(cfg: Config, n_events: int, until: Any, timeout_s: float = 120) -> dict:
    """Publish a synthetic stream, run a trainer on a thread until it has learned it and
    `until(metrics)` holds (or the time is up), and return the last scrape."""
    port = free_ports(1)[0]
    cfg = cfg.replace(trainer={"metrics_port": port, "stop_when_idle_ms": 0})
    stream = SyntheticStream(
        SyntheticConfig(seed=3, n_users=150, n_items=120, n_events=n_events, temperature=0.1)
    )
    producer = kafka_io.make_producer(cfg.kafka)
    assert kafka_io.publish(producer, cfg.kafka.events_topic, stream.events()) == n_events
    producer.close()
    learned = threading.Event()

    def on_batch(stats: Any) -> None:
        if stats.events + stats.dead_letters >= n_events:
            learned.set()

    trainer = Trainer(cfg, on_batch=on_batch)
    thread = threading.Thread(target=trainer.run, daemon=True)
    thread.start()
    got: dict[str, float] = {}
    try:
        assert learned.wait(timeout_s), "the trainer did not learn the stream in time"
        deadline = threading.Event()
        timer = threading.Timer(30, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():  # served gauges are published at most once a second
                got = scrape(port)
                if until(got):
                    break
                deadline.wait(0.5)
        finally:
            timer.cancel()
    finally:
        trainer.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
    return got


def test_live_hr10_coverage_and_popular_share_on_metrics(config: Config) -> None:
    cfg = config.replace(
        trainer={
            "quality_sample_rate": 1.0,  # every event drawn ...
            "quality_max_per_batch": 10_000,  # ... none capped
            "quality_window": 100_000,  # the window holds every sample: gauge = hits/samples
        }
    )
    m = run_and_scrape(
        cfg,
        4000,
        lambda m: (
            m.get("streamrec_served_catalogue_coverage", 0) > 0
            and 'streamrec_live_hr10{users="known"}' in m
        ),
    )
    for series in (
        'streamrec_live_quality_samples_total{users="known"}',
        'streamrec_live_quality_samples_total{users="cold"}',
        'streamrec_live_quality_hits_total{users="known"}',
        'streamrec_live_quality_hits_total{users="cold"}',
        'streamrec_live_hr10{users="known"}',
        'streamrec_live_ndcg10{users="known"}',
        "streamrec_served_catalogue_coverage",
        "streamrec_served_popular_share",
    ):
        assert series in m, f"{series} missing from /metrics"
    for users in ("known", "cold"):
        samples = m[f'streamrec_live_quality_samples_total{{users="{users}"}}']
        hits = m[f'streamrec_live_quality_hits_total{{users="{users}"}}']
        assert samples > 0, users
        assert 0 <= hits <= samples
        hr = m[f'streamrec_live_hr10{{users="{users}"}}']
        assert 0.0 <= hr <= 1.0
        assert hr == pytest.approx(hits / samples), users
    # The planted tastes are learnable: known users hit clearly more often than the 10 of
    # 120 items a blind guess would (about 0.08); a model that learned nothing stays there.
    known_hr = m['streamrec_live_hr10{users="known"}']
    assert known_hr > 0.12, known_hr
    assert 0.0 < m["streamrec_served_catalogue_coverage"] <= 1.0
    assert 0.0 <= m["streamrec_served_popular_share"] <= 1.0


def test_sample_rate_zero_scores_nothing(config: Config) -> None:
    cfg = config.replace(trainer={"quality_sample_rate": 0.0})
    m = run_and_scrape(cfg, 1500, lambda m: m.get("streamrec_served_catalogue_coverage", 0) > 0)
    assert m['streamrec_live_quality_samples_total{users="known"}'] == 0
    assert m['streamrec_live_quality_samples_total{users="cold"}'] == 0
    assert not any(k.startswith("streamrec_live_hr10") for k in m)
    # the served lists are watched regardless
    assert 0.0 < m["streamrec_served_catalogue_coverage"] <= 1.0

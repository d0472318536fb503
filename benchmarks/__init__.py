"""Latency and throughput measurements (medians over interleaved runs)."""

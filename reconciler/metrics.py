"""Prometheus metrics of a drift check, in the text exposition format, for a node-exporter textfile
collector or a Pushgateway. Pure: returns bytes; the CLI writes the file.

Labels carry the spec's name, drift classes, finding codes and collection names: never a value of
the data, so a metrics system holds nothing private.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from reconciler.drift import CLASSES, Drift


def metrics_text(d: Drift, documents: dict[str, int]) -> bytes:
    registry = CollectorRegistry()
    spec = d.plan.spec_name

    def gauge(name: str, help_text: str, *labels: str) -> Gauge:
        return Gauge(name, help_text, ["spec", *labels], registry=registry)

    gauge("reconcile_converged", "1 when the data has the shape the spec declares: no write needed and "
          "no finding new since the baseline; else 0").labels(spec).set(int(d.converged))
    gauge("reconcile_writes_needed", "Document writes a reconcile apply would make").labels(spec).set(
        len(d.plan.ops))
    drift = gauge("reconcile_drift", "What each drift class counts (weeks, links, documents or findings)",
                  "class")
    series = gauge("reconcile_drift_series", "Series with drift of each class", "class")
    for c in CLASSES:
        members = d.members[c.name]
        drift.labels(spec, c.name).set(len(members))
        series.labels(spec, c.name).set(len({label for _, label in members}))
    findings = gauge("reconcile_findings", "Findings (data left untouched) by code", "code")
    for finding in d.plan.findings:
        findings.labels(spec, finding.code).inc()
    collections = gauge("reconcile_documents", "Documents read, by collection", "collection")
    for name, count in sorted(documents.items()):
        collections.labels(spec, name).set(count)
    if d.plan.read_time is not None:
        gauge("reconcile_read_time_seconds", "When the checked data was read, as Unix time").labels(spec).set(
            d.plan.read_time.timestamp())
    return generate_latest(registry)

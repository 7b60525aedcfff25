"""Parse rekeyd's /metrics with the Prometheus project's own OpenMetrics parser.

Usage: parse_metrics.py URL  -> prints {family: [[labels, value], ...]} as JSON.
An independent check that the exposition format is what Prometheus reads.
"""
import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

response = urllib.request.urlopen(sys.argv[1], timeout=10)
content_type = response.headers.get("Content-Type", "")
if not content_type.startswith("application/openmetrics-text"):
    sys.exit(f"unexpected Content-Type {content_type!r}")
text = response.read().decode()
out = {}
for family in text_string_to_metric_families(text):
    if family.name in out:
        sys.exit(f"family {family.name} appears twice")
    out[family.name] = [[sample.labels, sample.value, sample.name] for sample in family.samples]
print(json.dumps(out))

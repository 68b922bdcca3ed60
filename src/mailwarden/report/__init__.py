"""Report: the analyze/bounce/daily reports (rich text and JSON), alerts and Prometheus collectors
over the store."""

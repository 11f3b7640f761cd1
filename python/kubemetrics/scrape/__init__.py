"""Scraping the kubelets: the scraper (one tick: every node's /metrics/resource into
`Store.ingest`), its TLS transport, and giving freed memory back once per cycle."""

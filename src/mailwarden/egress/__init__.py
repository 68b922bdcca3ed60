"""Egress: who opens connections to remote SMTP ports (eBPF, NFLOG, sock_diag collectors),
per-process enrichment, summaries, and the nftables/iptables egress rule."""

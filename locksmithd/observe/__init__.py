"""What an operator sees of a running daemon and its group: Prometheus metrics and their HTTP endpoint."""

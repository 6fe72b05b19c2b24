"""Test harness (not installed): etcd launcher, fault proxy, simulated hosts, soak."""

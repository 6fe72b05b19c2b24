"""The etcd edge: client, key layout, the one guarded write, the fair queue."""

"""The pure core: values and rules with no I/O, no clock, no etcd and no D-Bus."""

"""The locksmithd daemon: state handlers (run) and the composition root (main)."""

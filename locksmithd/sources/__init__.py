"""Sources of "a reboot is needed" besides update_engine: the reboot-required file and a check command."""

"""The FleetLock server: locksmithd's semaphore served to Zincati and other FleetLock clients."""

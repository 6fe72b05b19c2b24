"""The local-host edge: identity, coordinator state file, terminals, journal."""

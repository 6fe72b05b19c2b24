"""locksmithd: coordinated, safe reboots for fleets of Linux hosts."""

__version__ = "0.1.0"

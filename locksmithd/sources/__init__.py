"""Sources of "a reboot is needed", one module each (update_engine, the reboot-required file, a check command).

The registry is ``sources/registry.py``; what a source is, ``sources/base.py``.
"""

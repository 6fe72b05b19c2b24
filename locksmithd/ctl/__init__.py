"""locksmithctl: the command-line tool and its views."""

"""The HTTP surface beside Slack: alert intake (`alerts.py`) and the status page that people
reach with a browser (`status.py`)."""

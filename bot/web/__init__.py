"""The HTTP surface beside Slack: alert intake (`alerts.py`)."""

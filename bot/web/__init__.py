"""The HTTP surface beside Slack that people reach with a browser: the status page."""

"""Incident bot: runs the incident-response procedure from Slack."""

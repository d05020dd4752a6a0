"""The fault campaign: the faults a real workspace meets, each counted for loss and doubling."""

"""corosm."""

"""Network: new interfaces and egress outside the allow-list."""

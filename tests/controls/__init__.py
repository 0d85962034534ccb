"""The agent's controls, each against its real OS surface (umockdev, logind on a private
bus, Xvfb, a private cupsd, real files, processes and network namespaces)."""

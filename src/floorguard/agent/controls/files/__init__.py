"""Files: data leaving on removable and network mounts."""

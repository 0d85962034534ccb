"""USB: storage, phones and network adapters blocked; HID and approved
devices allowed."""

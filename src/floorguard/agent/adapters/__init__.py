"""Thin OS adapters: sysfs USB, logind, X11, CUPS/IPP, the mount table and
desktop notifications. No policy, no events."""
